#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# scripts/metrics-overhead.sh [ROUNDS] -- does scraping --metrics disturb
# the fast path?  A release kcont-nfsd (kcont model, --metrics on) serves
# 8 KiB random READs to kcont-nfsbench (1 process, depth 16) for 5 s,
# alternately with nobody scraping and with a scrape every 100 ms (curl in
# a loop), ROUNDS times each (default 3).  Prints ops/s and server CPU µs
# per op of every run, the medians, and the ratio scraped / quiet.  For
# the figure in docs/nfsd.md (METRICS); a benchmark, not a test.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
NFS_PORT=${NFS_PORT:-20890} MOUNT_PORT=${MOUNT_PORT:-20848} METRICS_PORT=${METRICS_PORT:-20849}
if [ "$(id -u)" -ne 0 ]; then
  echo "metrics-overhead: needs root (the server uses open_by_handle_at)" >&2
  exit 2
fi
. scripts/deps.sh
kcont_ensure_deps
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKCONT_TESTS=OFF -DKCONT_BENCH=ON >/dev/null
ninja -C build -j"$(kcont_jobs)" kcont-nfsd kcont-nfsbench >&2

tmp=$(mktemp -d /tmp/kcont-mo.XXXXXX)
server_pid="" scraper=""
cleanup() {
  local p
  for p in $scraper $server_pid; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
mkdir "$tmp/export"
./build/nfsd/kcont-nfsd --export "$tmp/export" --bind 127.0.0.1 --nfs-port "$NFS_PORT" \
  --mount-port "$MOUNT_PORT" --metrics "127.0.0.1:$METRICS_PORT" 2>"$tmp/server.log" &
server_pid=$!
kcont_wait_ready "$tmp/server.log" "$server_pid" || {
  cat "$tmp/server.log" >&2
  exit 1
}
url="nfs://127.0.0.1$tmp/export?version=3&nfsport=$NFS_PORT&mountport=$MOUNT_PORT"
bench() { # bench -> "ops/s cpu-us/op"
  ./build/nfsd/bench/kcont-nfsbench --url "$url" --op read --size 8k --depth 16 \
    --duration 5 --warmup 1 --file-size 64M --server-pid "$server_pid" \
    --json "$tmp/r.json" >/dev/null 2>&1
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["ops_per_s"], r.get("server_cpu_us_per_op") or 0)' "$tmp/r.json"
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
quiet=() scraped=() quiet_cpu=() scraped_cpu=()
for round in $(seq "$ROUNDS"); do
  read -r ops cpu < <(bench)
  quiet+=("$ops") quiet_cpu+=("$cpu")
  (while :; do curl -s -o /dev/null "http://127.0.0.1:$METRICS_PORT/metrics"; sleep 0.1; done) &
  scraper=$!
  read -r ops2 cpu2 < <(bench)
  kill "$scraper" 2>/dev/null || true
  wait "$scraper" 2>/dev/null || true
  scraper=""
  scraped+=("$ops2") scraped_cpu+=("$cpu2")
  printf 'round %d: quiet %.0f ops/s (%.2f us/op), scraped every 100 ms %.0f ops/s (%.2f us/op)\n' \
    "$round" "$ops" "$cpu" "$ops2" "$cpu2"
done
mq=$(printf '%s\n' "${quiet[@]}" | median)
ms=$(printf '%s\n' "${scraped[@]}" | median)
cq=$(printf '%s\n' "${quiet_cpu[@]}" | median)
cs=$(printf '%s\n' "${scraped_cpu[@]}" | median)
printf 'median: quiet %.0f ops/s, %.2f us/op; scraped %.0f ops/s, %.2f us/op; ratio %.3f\n' \
  "$mq" "$cq" "$ms" "$cs" "$(echo "$ms / $mq" | bc -l)"
