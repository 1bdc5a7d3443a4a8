#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# The core benchmark tables: builds kcont in release mode and runs the core
# table (kcont against a bare queue, a
# condvar hand-off, Asio post and libuv async), then the buf read path
# against a blocking pread + condvar hand-off (see docs/benchmarks.md).
# Arguments go to the core benchmark (Google Benchmark flags).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
kcont_ensure_deps
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKCONT_TESTS=OFF -DKCONT_BENCH=ON >/dev/null
ninja -C build -j"$(kcont_jobs)" kcont_bench kcont_bench_buf
./build/core/bench/kcont_bench "$@"
echo
./build/io/kcont_bench_buf
