#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# Integration test: real clients and servers through kcont-relay, loopback
# only.  1) curl downloads a 20 MiB random file from `python3 -m
# http.server` through the relay, 8 times in parallel: every byte must
# arrive (sha256).  2) an iperf3 client runs 3 seconds against an iperf3
# server through the relay and must succeed with the bytes it reports.
set -euo pipefail
# A second argument (e.g. --copy) goes to both relays: the test runs once
# on the default zero-copy splice path and once on the copy path.
relay=${1:?usage: relay_test.sh path/to/kcont-relay [relay flags]}
shift
relay_flags=("$@")
for tool in curl iperf3 python3 sha256sum; do
  command -v "$tool" >/dev/null || { echo "relay_test: $tool is missing (scripts/test.sh installs it)"; exit 1; }
done
# shellcheck source=io/tests/net_helpers.sh
. "$(dirname "$0")/net_helpers.sh"

# 1. HTTP through the relay.
head -c $((20 * 1024 * 1024)) /dev/urandom > "$work/blob"
want=$(sha256sum < "$work/blob" | cut -d' ' -f1)
http_port=$(free_port)
(cd "$work" && exec python3 -m http.server "$http_port" --bind 127.0.0.1 >/dev/null 2>&1) &
pids+=("$!")
relay_port=$(free_port)
"$relay" "${relay_flags[@]}" --listen "127.0.0.1:$relay_port" --to "127.0.0.1:$http_port" --max-conns 64 2>"$work/relay.log" &
relay_pid=$!
pids+=("$relay_pid")
wait_port "$http_port"
wait_port "$relay_port"
for i in $(seq 1 8); do
  curl -sS --max-time 60 -o "$work/got.$i" "http://127.0.0.1:$relay_port/blob" &
  pids+=("$!")
done
fail=0
for i in $(seq 1 8); do
  wait "${pids[-1]}" || true
  unset 'pids[-1]'
done
for i in $(seq 1 8); do
  got=$(sha256sum < "$work/got.$i" 2>/dev/null | cut -d' ' -f1 || true)
  if [ "$got" != "$want" ]; then
    echo "relay_test: curl download $i through the relay differs ($(stat -c %s "$work/got.$i" 2>/dev/null || echo 0) bytes)"
    fail=1
  fi
done
[ "$fail" -eq 0 ] && echo "relay_test: 8 x 20 MiB over HTTP through kcont-relay: intact"

# 2. iperf3 through the relay.
iperf_port=$(free_port)
iperf3 -s -p "$iperf_port" >"$work/iperf-server.log" 2>&1 &
pids+=("$!")
wait_port "$iperf_port"  # a server (not -1): the probe is not its one client
relay2_port=$(free_port)
"$relay" "${relay_flags[@]}" --listen "127.0.0.1:$relay2_port" --to "127.0.0.1:$iperf_port" 2>"$work/relay2.log" &
pids+=("$!")
wait_port "$relay2_port"
sleep 0.3
if iperf3 -c 127.0.0.1 -p "$relay2_port" -t 3 -J >"$work/iperf.json" 2>"$work/iperf.err"; then
  bps=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(int(d.get("end", {}).get("sum_received", {}).get("bits_per_second", 0)))' "$work/iperf.json")
  echo "relay_test: iperf3 through kcont-relay: $((bps / 1000000)) Mbit/s"
  if [ "$bps" -le 0 ]; then echo "relay_test: iperf3 reported nothing received"; tail -20 "$work/iperf.json"; fail=1; fi
else
  echo "relay_test: iperf3 through the relay failed:"; cat "$work/iperf.err" "$work/iperf.json" | tail -20
  fail=1
fi

# The relay stops cleanly on SIGTERM.
kill -TERM "$relay_pid"
if ! wait "$relay_pid"; then echo "relay_test: kcont-relay did not exit 0 on SIGTERM"; fail=1; fi
grep -q "stopping (SIGTERM)" "$work/relay.log" || { echo "relay_test: no shutdown line"; cat "$work/relay.log"; fail=1; }
[ "$fail" -eq 0 ] && echo "relay_test: passed"
exit "$fail"
