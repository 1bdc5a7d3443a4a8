#!/usr/bin/env bash
# Relay benchmark: iperf3 throughput direct, through kcont-relay and through
# socat (the classic relay), side by side in one run on loopback, with the
# relay process's context switches per MiB relayed (all its threads, from
# /proc/PID/task/*/status).  Usage: relay_bench.sh path/to/kcont-relay [seconds]
set -euo pipefail
relay=${1:?usage: relay_bench.sh path/to/kcont-relay [seconds]}
secs=${2:-5}
for tool in iperf3 socat python3; do
  command -v "$tool" >/dev/null || { echo "relay_bench: $tool is missing"; exit 1; }
done
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
pids+=($!)
sleep 0.5

read -r direct_bps _ < <(run_iperf "$iperf_port")

kport=$(free_port)
"$relay" --listen "127.0.0.1:$kport" --to "127.0.0.1:$iperf_port" 2>/dev/null &
kpid=$!
pids+=($kpid)
sleep 0.5
k0=$(csw "$kpid")
read -r k_bps k_bytes < <(run_iperf "$kport")
k1=$(csw "$kpid")

sport=$(free_port)
socat "TCP-LISTEN:$sport,bind=127.0.0.1,fork,reuseaddr" "TCP:127.0.0.1:$iperf_port" 2>/dev/null &
spid=$!
pids+=($spid)
sleep 0.5
read -r s_bps s_bytes < <(run_iperf "$sport")

python3 - "$direct_bps" "$k_bps" "$k_bytes" "$((k1 - k0))" "$s_bps" <<'PY'
import sys
d, kb, kbytes, kcsw, sb = map(int, sys.argv[1:])
mib = lambda b: b / (1 << 20) if b else float('nan')
print("relay benchmark -- iperf3, 1 MiB writes, loopback, one run")
print(f"{'path':<24}{'Gbit/s':>9}{'vs direct':>11}{'csw/MiB':>10}")
print(f"{'direct':<24}{d/1e9:>9.2f}{1.0:>10.2f}x{'-':>10}")
print(f"{'kcont-relay':<24}{kb/1e9:>9.2f}{(kb/d if d else 0):>10.2f}x{kcsw/mib(kbytes):>10.3f}")
print(f"{'socat':<24}{sb/1e9:>9.2f}{(sb/d if d else 0):>10.2f}x{'n/a':>10}")
print("(socat forks a short-lived child per connection, so its switches are not measured)")
PY
