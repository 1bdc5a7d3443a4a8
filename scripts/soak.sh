#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# scripts/soak.sh [MINUTES] [MODEL] -- a long run of kcont-nfsd (release
# build) under a changing load, for docs/reliability.md.
#
# Rounds of ROUND seconds (default 60) until MINUTES (default 30) have
# passed.  In every round:
#   - nfs_driver stress: CLIENTS (default 4) libnfs clients create, write,
#     read back (checksummed), rename and remove files for the whole round;
#   - connection churn: every 5 s one address opens 200 idle and 20
#     slowloris connections while a bystander mounts and reads, then drops
#     them all;
#   - SIGHUP twice, the exports file alternating between one and two exports;
#   - every KILL_EVERY-th round (default 3) ends with nfs_driver save, a
#     kill -9 of the server, a restart on the same ports and nfs_driver check
#     (the saved handles still work, the data is intact, the write verifier
#     changed, so a client resends its UNSTABLE writes).
# The server's RSS and open descriptors are sampled every 10 s and printed
# as a curve at the end.  Exit status non-zero if any client failed, a
# restart failed, or at the end (every client gone) the server holds more
# than 8 descriptors or 64 MiB of RSS beyond what it held at rest after
# its first round.
# Needs root (open_by_handle_at).
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-30}
MODEL=${2:-kcont}
ROUND=${ROUND:-60} CLIENTS=${CLIENTS:-4} KILL_EVERY=${KILL_EVERY:-3}
NFS_PORT=${NFS_PORT:-20690} MOUNT_PORT=${MOUNT_PORT:-20648}
case $MINUTES in '' | *[!0-9]*) echo "usage: $0 [MINUTES] [kcont|threads]" >&2 && exit 2 ;; esac
if [ "$(id -u)" -ne 0 ]; then
  echo "soak: needs root (the server uses open_by_handle_at)" >&2
  exit 2
fi
. scripts/deps.sh
kcont_ensure_deps
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKCONT_TESTS=OFF -DKCONT_BENCH=ON >/dev/null
ninja -C build -j"$(kcont_jobs)" kcont-nfsd >&2
for tool in nfs_driver nfs_siege; do
  # shellcheck disable=SC2046  # pkg-config prints several words
  cc -O2 -std=gnu11 -o "build/$tool" "nfsd/tests/$tool.c" $(pkg-config --cflags --libs libnfs)
done

tmp=$(mktemp -d /tmp/kcont-soak.XXXXXX)
server_pid=""
bg_pids=()
cleanup() {
  local p
  for p in "${bg_pids[@]}" $server_pid; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$tmp/export" "$tmp/second"
printf 'a small file\n' >"$tmp/export/small.txt"
url() { echo "nfs://127.0.0.1$tmp/export${1:+/$1}?version=3&nfsport=$NFS_PORT&mountport=$MOUNT_PORT"; }
exports() { # exports N: the exports file with N (1 or 2) exports
  printf '%s *(rw,no_root_squash)\n' "$tmp/export" >"$tmp/exports"
  if [ "$1" -eq 2 ]; then printf '%s *(rw,no_root_squash)\n' "$tmp/second" >>"$tmp/exports"; fi
}
start() {
  ./build/nfsd/kcont-nfsd --exports "$tmp/exports" --model "$MODEL" --bind 127.0.0.1 \
    --nfs-port "$NFS_PORT" --mount-port "$MOUNT_PORT" 2>>"$tmp/server.log" &
  server_pid=$!
  for _ in $(seq 300); do
    [ "$(grep -c 'kcont-nfsd: ready' "$tmp/server.log")" -ge "$1" ] && return 0
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "soak: the server did not start; log:" >&2
  tail -n 20 "$tmp/server.log" >&2
  return 1
}
rss_mib() { echo $(($(awk '/VmRSS/ {print $2}' "/proc/$server_pid/status") / 1024)); }
fds() { find "/proc/$server_pid/fd" -mindepth 1 | wc -l; }

exports 1
starts=1
start $starts
failures=0
restarts=0
curve=()
t0=$(date +%s)
end=$((t0 + MINUTES * 60))
sample() { curve+=("$(($(date +%s) - t0)) $(rss_mib) $(fds)"); }
sample
round=0
base_fds=""
base_rss=0
echo "soak: $MINUTES min, model $MODEL, $CLIENTS clients, rounds of $ROUND s, kill -9 every $KILL_EVERY rounds"
while [ "$(date +%s)" -lt "$end" ]; do
  round=$((round + 1))
  ./build/nfs_driver stress "$(url)" "$CLIENTS" "${ROUND}s" >"$tmp/stress.out" 2>&1 &
  stress=$!
  bg_pids=("$stress")
  round_end=$(($(date +%s) + ROUND))
  n=0
  while [ "$(date +%s)" -lt "$round_end" ]; do
    n=$((n + 1))
    if ! ./build/nfs_siege siege "$(url small.txt)" 127.0.0.2 200 20 >"$tmp/siege.out" 2>&1; then
      echo "soak: round $round: the bystander failed during connection churn" >&2
      sed 's/^/    /' "$tmp/siege.out" >&2
      failures=$((failures + 1))
    fi
    if [ $((n % 6)) -eq 2 ] || [ $((n % 6)) -eq 5 ]; then
      exports $((n % 6 == 2 ? 2 : 1))
      kill -HUP "$server_pid"
    fi
    [ $((n % 2)) -eq 0 ] && sample
    sleep 5
  done
  if ! wait "$stress"; then
    echo "soak: round $round: a stress client failed" >&2
    grep '^FAIL' "$tmp/stress.out" | head -n 5 | sed 's/^/    /' >&2
    failures=$((failures + 1))
  fi
  bg_pids=()
  line="round $round: $(tail -n 1 "$tmp/stress.out")"
  if [ -z "$base_fds" ]; then # this process's first round is over: at rest
    sleep 2
    base_fds=$(fds) base_rss=$(rss_mib)
    line="$line; at rest: rss $base_rss MiB, $base_fds fds (the baseline)"
  fi
  # kill -9 + restart, unless this is the last round (the end is measured
  # on a process that lived through rounds)
  if [ $((round % KILL_EVERY)) -eq 0 ] && [ $(($(date +%s) + ROUND)) -lt "$end" ]; then
    if ./build/nfs_driver save "$(url)" "$tmp/state" >"$tmp/save.out" 2>&1; then
      kill -9 "$server_pid"
      wait "$server_pid" 2>/dev/null || true
      starts=$((starts + 1))
      start $starts
      restarts=$((restarts + 1))
      base_fds=
      if ./build/nfs_driver check "$(url)" "$tmp/state" >"$tmp/check.out" 2>&1; then
        line="$line; kill -9 + restart: handles, data and verifier checked"
      else
        failures=$((failures + 1))
        line="$line; kill -9 + restart: CHECK FAILED"
        sed 's/^/    /' "$tmp/check.out" >&2
      fi
    else
      failures=$((failures + 1))
      line="$line; SAVE FAILED"
      sed 's/^/    /' "$tmp/save.out" >&2
    fi
  fi
  echo "$line; rss $(rss_mib) MiB, $(fds) fds"
done

# At rest, every client gone: the server must hold what it held at rest
# after its first round of load (when its pools and caches were warm).  The
# vnode cache keeps a descriptor per cached file (at most 4096 per export),
# so a few more are fine; a leak per call, connection or reload is not.
sleep 2
sample
echo
echo "    seconds   RSS MiB   fds"
printf '%s\n' "${curve[@]}" | awk '{printf "    %7d   %7d   %3d\n", $1, $2, $3}'
read -r _ rss1 fds1 <<<"${curve[${#curve[@]} - 1]}"
echo "soak: $round rounds, $restarts restarts, $failures failures; at rest after the first round rss ${base_rss} MiB ${base_fds:-?} fds, at the end rss $rss1 MiB $fds1 fds"
kill -USR1 "$server_pid"
sleep 0.3
grep -h 'connections (' "$tmp/server.log" | tail -n 1 | sed 's/^.*: //'
kill -TERM "$server_pid"
wait "$server_pid" || failures=$((failures + 1))
server_pid=""
if [ -n "$base_fds" ] && [ "$fds1" -gt $((base_fds + 8)) ]; then
  echo "soak: FAIL: descriptors grew ($base_fds -> $fds1)" >&2
  failures=$((failures + 1))
fi
if [ "$rss1" -gt $((base_rss + 64)) ]; then
  echo "soak: FAIL: RSS grew by more than 64 MiB ($base_rss -> $rss1)" >&2
  failures=$((failures + 1))
fi
[ "$failures" -eq 0 ]
