#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# scripts/memory.sh [MODEL ...] -- what a burst of large WRITEs costs a
# release kcont-nfsd, with and without a --max-memory budget, for the
# figures in docs/reliability.md.
#
# For each MODEL (default: kcont threads) and each budget in BUDGETS
# (default: "default 256M"; "default" means no --max-memory option): start
# the server, send NCONN connections x NREQ pipelined 1 MiB WRITEs
# (default 64 x 16, from 127.0.0.4), sample the server's RSS every 50 ms,
# and print its RSS at rest, at its peak and 3 s after the burst, the
# burst's time, and the server's own account (its "memory ..." counters).
# Needs root.  Exit status non-zero if a WRITE was not answered or the
# server's account passed its limit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
kcont_ensure_deps
NCONN=${NCONN:-64} NREQ=${NREQ:-16} BUDGETS=${BUDGETS:-default 256M}
NFS_PORT=${NFS_PORT:-20790} MOUNT_PORT=${MOUNT_PORT:-20748}
if [ "$(id -u)" -ne 0 ]; then
  echo "memory: needs root (the server uses open_by_handle_at)" >&2
  exit 2
fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKCONT_TESTS=OFF -DKCONT_BENCH=ON >/dev/null
ninja -C build -j"$(kcont_jobs)" kcont-nfsd >&2
# shellcheck disable=SC2046  # pkg-config prints several words
cc -O2 -std=gnu11 -o build/nfs_siege nfsd/tests/nfs_siege.c $(pkg-config --cflags --libs libnfs)

tmp=$(mktemp -d /tmp/kcont-memory.XXXXXX)
server_pid="" sampler=""
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  local p
  for p in $sampler $server_pid; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
mkdir "$tmp/export"
head -c $((1024 * 1024)) /dev/urandom >"$tmp/export/big.bin"
url="nfs://127.0.0.1$tmp/export/big.bin?version=3&nfsport=$NFS_PORT&mountport=$MOUNT_PORT"
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

failed=0
models=("$@")
[ ${#models[@]} -eq 0 ] && models=(kcont threads)
for model in "${models[@]}"; do
  for budget in $BUDGETS; do
    args=(--export "$tmp/export" --model "$model" --bind 127.0.0.1 --max-conns-per-addr 0
      --nfs-port "$NFS_PORT" --mount-port "$MOUNT_PORT")
    [ "$budget" != default ] && args+=(--max-memory "$budget")
    : >"$tmp/server.log"
    ./build/nfsd/kcont-nfsd "${args[@]}" 2>"$tmp/server.log" &
    server_pid=$!
    if ! kcont_wait_ready "$tmp/server.log" "$server_pid"; then
      echo "memory: the server did not start; log:" >&2
      tail -n 5 "$tmp/server.log" >&2
      exit 1
    fi
    idle=$(rss_kib "$server_pid")
    echo 0 >"$tmp/peak"
    (
      peak=0
      while kill -0 "$server_pid" 2>/dev/null; do
        v=$(rss_kib "$server_pid")
        if [ "${v:-0}" -gt "$peak" ]; then
          peak=$v
          echo "$peak" >"$tmp/peak"
        fi
        sleep 0.05
      done
    ) &
    sampler=$!
    burst=$(./build/nfs_siege bigwrite "$url" 127.0.0.4 "$NCONN" "$NREQ" 2>&1) || failed=1
    sleep 3
    after=$(rss_kib "$server_pid")
    kill -TERM "$server_pid"
    wait "$server_pid" || failed=1
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    server_pid="" sampler=""
    account=$(grep -o 'memory [0-9]* of [^;]*' "$tmp/server.log" | tail -n 1)
    echo "$model, --max-memory $budget: RSS at rest $((idle / 1024)) MiB, peak" \
      "$(($(cat "$tmp/peak") / 1024)) MiB, 3 s after $((after / 1024)) MiB"
    echo "  $burst"
    echo "  account: $account"
    used_peak=$(echo "$account" | sed -E 's/.*peak ([0-9]+).*/\1/')
    limit=$(echo "$account" | sed -E 's/memory [0-9]+ of ([0-9]+) MiB.*/\1/')
    if [ -z "$account" ] || [ "$used_peak" -gt "$limit" ]; then
      echo "  FAIL: the account passed its limit (or is missing)"
      failed=1
    fi
  done
done
exit $failed
