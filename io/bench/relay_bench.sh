#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# Relay benchmark: iperf3 throughput direct, through kcont-relay (zero-copy
# splice, and --copy) and through socat (the classic relay), side by side in
# one run on loopback, with each relay's context switches per MiB relayed:
# kcont-relay's from /proc/PID/task/*/status (all threads, io_uring's
# workers included), socat's from GNU time's rusage (it forks a child per
# connection; the child is reaped, so its switches count).
# Usage: relay_bench.sh path/to/kcont-relay [seconds]
set -euo pipefail
relay=${1:?usage: relay_bench.sh path/to/kcont-relay [seconds]}
secs=${2:-5}
for tool in iperf3 socat python3 /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "relay_bench: $tool is missing"; exit 1; }
done
# shellcheck source=io/tests/net_helpers.sh
. "$(dirname "$0")/../tests/net_helpers.sh"

csw() {  # context switches of all threads of process $1
  local sum=0
  for f in /proc/"$1"/task/*/status; do
    sum=$((sum + $(awk '/ctxt_switches/ {s += $2} END {print s}' "$f" 2>/dev/null || echo 0)))
  done
  echo "$sum"
}
run_iperf() {  # port -> "bits_per_second bytes"
  iperf3 -c 127.0.0.1 -p "$1" -t "$secs" -l 1M -J >"$work/out.json" 2>/dev/null || true
  python3 -c 'import json,sys
d=json.load(open(sys.argv[1])).get("end",{}).get("sum_received",{})
print(int(d.get("bits_per_second",0)), int(d.get("bytes",0)))' "$work/out.json"
}
iperf_port=$(free_port)
iperf3 -s -p "$iperf_port" >/dev/null 2>&1 &
pids+=("$!")
sleep 0.5

read -r direct_bps _ < <(run_iperf "$iperf_port")

run_kcont() {  # relay flags... -> "bits_per_second bytes csw"
  local port pid c0 c1 bps bytes
  port=$(free_port)
  "$relay" "$@" --listen "127.0.0.1:$port" --to "127.0.0.1:$iperf_port" 2>/dev/null &
  pid=$!
  pids+=("$pid")
  sleep 0.5
  c0=$(csw "$pid")
  read -r bps bytes < <(run_iperf "$port")
  c1=$(csw "$pid")
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  echo "$bps $bytes $((c1 - c0))"
}
read -r k_bps k_bytes k_csw < <(run_kcont)
read -r c_bps c_bytes c_csw < <(run_kcont --copy)

sport=$(free_port)
/usr/bin/time -f "%w %c" -o "$work/socat.time" \
  socat "TCP-LISTEN:$sport,bind=127.0.0.1,fork,reuseaddr" "TCP:127.0.0.1:$iperf_port" 2>/dev/null &
tpid=$!
pids+=("$tpid")
sleep 0.5
read -r s_bps s_bytes < <(run_iperf "$sport")
spid=$(pgrep -P "$tpid" socat || true)
[ -n "$spid" ] && kill "$spid" 2>/dev/null
wait "$tpid" 2>/dev/null || true
s_csw=$(awk 'END {print $1 + $2}' "$work/socat.time" 2>/dev/null || echo 0)

python3 - "$direct_bps" "$k_bps" "$k_bytes" "$k_csw" "$c_bps" "$c_bytes" "$c_csw" \
  "$s_bps" "$s_bytes" "$s_csw" <<'PY'
import sys
d, kb, kbytes, kcsw, cb, cbytes, ccsw, sb, sbytes, scsw = map(int, sys.argv[1:])
mib = lambda b: b / (1 << 20) if b else float('nan')
print("relay benchmark -- iperf3, 1 MiB writes, loopback, one run")
print(f"{'path':<24}{'Gbit/s':>9}{'vs direct':>11}{'csw/MiB':>10}")
print(f"{'direct':<24}{d/1e9:>9.2f}{1.0:>10.2f}x{'-':>10}")
print(f"{'kcont-relay (splice)':<24}{kb/1e9:>9.2f}{(kb/d if d else 0):>10.2f}x{kcsw/mib(kbytes):>10.3f}")
print(f"{'kcont-relay --copy':<24}{cb/1e9:>9.2f}{(cb/d if d else 0):>10.2f}x{ccsw/mib(cbytes):>10.3f}")
print(f"{'socat':<24}{sb/1e9:>9.2f}{(sb/d if d else 0):>10.2f}x{scsw/mib(sbytes):>10.3f}")
PY
