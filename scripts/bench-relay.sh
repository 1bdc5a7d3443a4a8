#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# Builds kcont-relay (release) and runs the relay benchmark: iperf3 direct
# vs through kcont-relay vs through socat, in one run (docs/relay.md).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
kcont_ensure_deps socat time
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKCONT_TESTS=OFF -DKCONT_BENCH=ON >/dev/null
ninja -C build -j"$(kcont_jobs)" kcont-relay
exec bash io/bench/relay_bench.sh build/io/kcont-relay "${1:-5}"
