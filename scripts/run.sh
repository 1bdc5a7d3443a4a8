#!/usr/bin/env bash
# The main job, for now: builds kcont in release mode and runs the core
# demonstration -- the benchmark table of kcont against a bare queue, a
# condvar hand-off, Asio post and libuv async (see docs/benchmarks.md).
# It becomes the NFS server when kcont-nfsd lands.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
kcont_ensure_deps
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKCONT_TESTS=OFF -DKCONT_BENCH=ON >/dev/null
ninja -C build -j"$(kcont_jobs)" kcont_bench
exec ./build/core/bench/kcont_bench "$@"
