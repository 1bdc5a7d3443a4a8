#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# scripts/siege.sh [MODEL ...] -- hostile clients against a release
# kcont-nfsd with its default limits, for the figures in
# docs/reliability.md (the test command runs the same attacks scaled down,
# in nfsd/tests/nfs_integration.sh).
#
# For each MODEL (default: kcont threads): one address (127.0.0.2) opens
# IDLE idle and SLOW slowloris connections (default 5000 and 500) and holds
# them while a bystander from 127.0.0.1 mounts the export and reads a small
# file; then NOREAD clients (default 4) pipeline 1 MiB READs and never read
# a reply for SECS seconds (default 10) while the bystander mounts and reads
# again and again.  Prints the bystander's times, what the server kept, its
# connection counters, and its RSS and open descriptors before and after.
# Needs root.  Exit status non-zero if a bystander failed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
kcont_ensure_deps
IDLE=${IDLE:-5000} SLOW=${SLOW:-500} NOREAD=${NOREAD:-4} SECS=${SECS:-10}
NFS_PORT=${NFS_PORT:-20590} MOUNT_PORT=${MOUNT_PORT:-20548}
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKCONT_TESTS=OFF -DKCONT_BENCH=ON >/dev/null
ninja -C build -j"$(kcont_jobs)" kcont-nfsd >&2
# shellcheck disable=SC2046  # pkg-config prints several words
cc -O2 -std=gnu11 -o build/nfs_siege nfsd/tests/nfs_siege.c $(pkg-config --cflags --libs libnfs)

tmp=$(mktemp -d /tmp/kcont-siege.XXXXXX)
server_pid=""
trap '[ -n "$server_pid" ] && kill -9 "$server_pid" 2>/dev/null; rm -rf "$tmp"' EXIT
mkdir "$tmp/export"
printf 'a small file\n' >"$tmp/export/small.txt"
head -c $((1024 * 1024)) /dev/urandom >"$tmp/export/big.bin"
url() { echo "nfs://127.0.0.1$tmp/export/$1?version=3&nfsport=$NFS_PORT&mountport=$MOUNT_PORT"; }
usage() { # RSS in MiB and open descriptors of the server
  echo "rss $(($(awk '/VmRSS/ {print $2}' "/proc/$server_pid/status") / 1024)) MiB," \
    "$(find "/proc/$server_pid/fd" -mindepth 1 | wc -l) fds"
}

failed=0
for model in "${@:-kcont threads}"; do
  for m in $model; do
    echo "=== model $m: defaults, $IDLE idle + $SLOW slowloris from 127.0.0.2"
    ./build/nfsd/kcont-nfsd --export "$tmp/export" --model "$m" --nfs-port "$NFS_PORT" \
      --mount-port "$MOUNT_PORT" 2>"$tmp/server.log" &
    server_pid=$!
    kcont_wait_ready "$tmp/server.log" "$server_pid" || {
      cat "$tmp/server.log" >&2
      exit 1
    }
    echo "server at rest: $(usage)"
    ./build/nfs_siege siege "$(url small.txt)" 127.0.0.2 "$IDLE" "$SLOW" || failed=1
    echo "server after the siege: $(usage)"
    echo "=== model $m: $NOREAD clients never read their 1 MiB READ replies for $SECS s"
    ./build/nfs_siege noread "$(url big.bin)" 127.0.0.3 "$NOREAD" "$SECS" || failed=1
    echo "server after: $(usage)"
    kill -USR1 "$server_pid"
    sleep 0.5
    kill -TERM "$server_pid"
    wait "$server_pid" || failed=1
    server_pid=""
    grep -h 'connections (' "$tmp/server.log" | tail -n 1 | sed 's/^.*: //'
  done
done
exit $failed
