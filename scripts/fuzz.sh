#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# fuzz.sh -- builds and runs the libFuzzer target of kcont-nfsd's request
# path (nfsd/fuzz/fuzz_rpc.cc: record marking, call decoding, serve_call).
#
# Usage: bash scripts/fuzz.sh [SECONDS]      (default 60; needs root)
#
# Installs clang-14 and libclang-rt-14-dev with apt-get when missing,
# builds the CMake target kcont_fuzz_rpc (KCONT_FUZZ=ON) with libFuzzer +
# ASan + UBSan in build-fuzz/, runs it for SECONDS on a copy
# of nfsd/fuzz/corpus/ (the seeds stay untouched; new inputs land in
# build-fuzz/corpus/), prints a summary, and exits non-zero on any crash,
# leak, UB report or timeout (the reproducer is left in build-fuzz/).
set -euo pipefail

SECONDS_TO_RUN="${1:-60}"
if ! [[ "$SECONDS_TO_RUN" =~ ^[0-9]+$ ]] || [ "$SECONDS_TO_RUN" -lt 1 ]; then
  echo "usage: bash scripts/fuzz.sh [SECONDS]" >&2
  exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/build-fuzz"
FUZZER="$OUT/nfsd/fuzz/kcont_fuzz_rpc"
CXX=clang++-14

if [ "$(id -u)" -ne 0 ]; then
  echo "fuzz.sh: must run as root (the server's file handles need open_by_handle_at;" \
    "apt-get may be needed)" >&2
  exit 2
fi

# ---- toolchain -----------------------------------------------------------------
need=()
command -v "$CXX" >/dev/null 2>&1 || need+=(clang-14)
# libFuzzer's runtime ships in libclang-rt-14-dev on Debian 12.
if ! ls /usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 &&
  ! dpkg -s libclang-rt-14-dev >/dev/null 2>&1; then
  need+=(libclang-rt-14-dev)
fi
if [ "${#need[@]}" -gt 0 ]; then
  echo "== installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${need[@]}"
fi

# ---- build ---------------------------------------------------------------------
# The CMake target kcont_fuzz_rpc (nfsd/fuzz/CMakeLists.txt): the protocol
# and everything below it (vfs -> io -> core), every library built with
# libFuzzer's coverage and ASan + UBSan.
# shellcheck source=scripts/deps.sh
# shellcheck source=scripts/deps.sh
. "$ROOT/scripts/deps.sh"
kcont_ensure_deps
echo "== building $FUZZER"
cmake -S "$ROOT" -B "$OUT" -G Ninja -DCMAKE_CXX_COMPILER="$CXX" -DCMAKE_BUILD_TYPE=Debug \
  -DKCONT_FUZZ=ON -DKCONT_SANITIZE=address,undefined -DKCONT_TESTS=OFF -DKCONT_BENCH=OFF \
  >/dev/null
ninja -C "$OUT" -j"$(kcont_jobs)" kcont_fuzz_rpc

# ---- run -----------------------------------------------------------------------
RUN="$OUT/run-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$RUN/artifacts" "$OUT/corpus"
cp -n "$ROOT"/nfsd/fuzz/corpus/* "$OUT/corpus/" 2>/dev/null || true
LOG="$RUN/fuzz.log"
echo "== fuzzing for ${SECONDS_TO_RUN}s (log: $LOG)"
set +e
KCONT_FUZZ_STATS=1 ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:allocator_may_return_null=1" \
  UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
  "$FUZZER" "$OUT/corpus" \
  -max_total_time="$SECONDS_TO_RUN" -timeout=10 -rss_limit_mb=2048 \
  -max_len=8192 -print_final_stats=1 \
  -artifact_prefix="$RUN/artifacts/" >"$LOG" 2>&1
rc=$?
set -e

# ---- summary -------------------------------------------------------------------
last=$(grep -E '^#[0-9]+' "$LOG" | tail -1 || true)
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$LOG" | tail -1)
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$LOG" | tail -1)
peak=$(sed -n 's/^stat::peak_rss_mb: *//p' "$LOG" | tail -1)
cov=$(echo "$last" | grep -oE 'cov: [0-9]+' | awk '{print $2}')
ft=$(echo "$last" | grep -oE 'ft: [0-9]+' | awk '{print $2}')
corp=$(echo "$last" | grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' | awk '{print $2}')
artifacts=$(find "$RUN/artifacts" -type f | sort)
ub=$(grep -c 'runtime error:' "$LOG" || true)

echo "== summary"
echo "  time:        ${SECONDS_TO_RUN}s"
echo "  executions:  ${execs:-?} (${rate:-?} exec/s)"
echo "  coverage:    ${cov:-?} edges, ${ft:-?} features"
echo "  corpus:      ${corp:-?} inputs (kept in $OUT/corpus)"
echo "  peak RSS:    ${peak:-?} MB"
echo "  exit code:   $rc"
if grep -q '^fuzz_rpc: server counters' "$LOG"; then
  echo "  server counters (calls per procedure, errors = non-OK status):"
  sed -n '/^fuzz_rpc: server counters/,/handle cache/p' "$LOG" | tail -n +2 | sed 's/^/  /'
fi
if [ "$rc" -ne 0 ] || [ -n "$artifacts" ] || [ "$ub" -gt 0 ]; then
  echo "  RESULT:      FAILED"
  grep -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|invariant violated|SUMMARY:' \
    "$LOG" | head -20 | sed 's/^/    /'
  for a in $artifacts; do echo "    reproducer: $a  (re-run: $FUZZER $a)"; done
  echo "  full log: $LOG"
  exit 1
fi
echo "  RESULT:      OK (no crash, leak, UB or timeout)"
