#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# The test command: installs what is missing, builds, and runs every test.
#   0. lint -- scripts/lint.sh: clang-format over every C/C++ file,
#      ShellCheck over every shell script, clang-tidy over the libraries
#      and tools (.clang-tidy); zero findings;
#   1. debug build (allocation guard on) -- all unit and race tests;
#   2. AddressSanitizer + UndefinedBehaviorSanitizer build -- the same tests;
#   3. ThreadSanitizer build -- the same tests (the concurrency core and
#      both NFS server models under real clients);
#   4. ceph -- a single-node Ceph cluster (scripts/ceph-cluster.sh, under a
#      temporary directory) and the tests labelled "ceph" against it: the
#      CephFS back end's VFS conformance and its own tests, and the NFS
#      server over a Ceph export (ceph_integration.sh); fails, never skips,
#      when the back end was not built or the cluster does not come up;
#   5. loaded -- the debug build's core tests again while stress-ng keeps
#      every CPU busy (no test may depend on an idle machine);
#   6. fuzz -- the libFuzzer target on the RPC/XDR decoder and the whole
#      dispatch, for KCONT_FUZZ_SECONDS (default 60) seconds;
#   7. install -- a release build installed into a temporary prefix; a
#      program outside the tree (packaging/consumer) is built against it
#      with find_package(kcont) and with pkg-config, and run;
#   8. package -- packaging/test-deb.sh: the Debian packages built, installed
#      with dpkg -i, the installed server started as its unit says, used
#      by NFS clients, reloaded, stopped, and the packages removed;
#   9. soak -- scripts/soak.sh for KCONT_SOAK_MINUTES (default 2) per model
#      on a release build: stress clients, connection churn, SIGHUP
#      reloads, kill -9 + restart; descriptors and RSS must stay flat.
# The NFS integration tests (libnfs clients against kcont-nfsd) are ctest
# tests, so they run in stages 1-3 (but those that need Ceph: stage 4).
# Exits non-zero on any failure.
# KCONT_TEST_STAGES="lint debug asan tsan ceph loaded fuzz install package soak"
# picks stages (default: all ten); KCONT_LOADED_TESTS is the ctest -R regex of the loaded stage
# (default: the core tests, about 4.5 minutes under load on 2 cores; "."
# runs the whole suite under load).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
kcont_ensure_deps

stages=${KCONT_TEST_STAGES:-"lint debug asan tsan ceph loaded fuzz install package soak"}
ok=0
fail=0
failed=()  # "stage: what failed", printed again at the very end
# passed / failed NAME [DETAIL]: counts a stage's result.
passed() { ok=$((ok + 1)); }
failed() {
  fail=$((fail + 1))
  failed+=("$1${2:+: $2}")
}
# The tests ctest saw fail in build directory $1 since clear_failures $1,
# on one line.
clear_failures() { rm -f "$1/Testing/Temporary/LastTestsFailed.log"; }
ctest_failures() {
  local log=$1/Testing/Temporary/LastTestsFailed.log
  [ -s "$log" ] && cut -d: -f2- "$log" | tr '\n' ' '
  return 0
}
run_stage() {
  local name=$1 dir=$2
  shift 2
  echo "=== kcont tests: $name ==="
  cmake -S . -B "$dir" -G Ninja -DKCONT_BENCH=OFF "$@" >/dev/null
  clear_failures "$dir"
  if ! ninja -C "$dir" -j"$(kcont_jobs)"; then
    failed "$name" "the build"
  elif ctest --test-dir "$dir" --output-on-failure -j1 -LE ceph; then
    passed
  else
    failed "$name" "$(ctest_failures "$dir")"
  fi
}
for s in $stages; do
  case $s in
    lint)
      echo "=== kcont tests: lint (clang-format, shellcheck, clang-tidy) ==="
      cmake -S . -B build-debug -G Ninja -DKCONT_BENCH=OFF -DCMAKE_BUILD_TYPE=Debug >/dev/null
      if BUILD_DIR=build-debug bash scripts/lint.sh; then passed; else failed lint; fi
      ;;
    debug) run_stage debug build-debug -DCMAKE_BUILD_TYPE=Debug ;;
    asan) UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
          run_stage "asan+ubsan" build-asan -DCMAKE_BUILD_TYPE=Debug \
            -DKCONT_SANITIZE=address,undefined ;;
    tsan) TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
          run_stage tsan build-tsan -DCMAKE_BUILD_TYPE=Debug -DKCONT_SANITIZE=thread ;;
    ceph)
      echo "=== kcont tests: ceph (a single-node cluster, the tests labelled ceph) ==="
      clear_failures build-debug
      if bash scripts/test-ceph.sh build-debug; then
        passed
      else
        failed ceph "$(ctest_failures build-debug)"
      fi
      ;;
    loaded)
      echo "=== kcont tests: debug build under load (stress-ng on every CPU) ==="
      kcont_ensure_deps stress-ng
      cmake -S . -B build-debug -G Ninja -DKCONT_BENCH=OFF -DCMAKE_BUILD_TYPE=Debug >/dev/null
      ninja -C build-debug -j"$(kcont_jobs)"
      stress-ng --cpu "$(kcont_jobs)" --cpu-method int64 --quiet &
      stress_pid=$!
      clear_failures build-debug
      if ctest --test-dir build-debug --output-on-failure -j1 -R "${KCONT_LOADED_TESTS:-^Kcont}"; then
        passed
      else
        failed loaded "$(ctest_failures build-debug)"
      fi
      kill "$stress_pid" 2>/dev/null || true
      wait "$stress_pid" 2>/dev/null || true
      ;;
    fuzz)
      echo "=== kcont tests: fuzz ==="
      if bash scripts/fuzz.sh "${KCONT_FUZZ_SECONDS:-60}"; then passed; else failed fuzz; fi
      ;;
    install)
      echo "=== kcont tests: install (find_package and pkg-config consumers) ==="
      # Its own build directory: everything it installs must be built.
      cmake -S . -B build-install -G Ninja -DCMAKE_BUILD_TYPE=Release -DKCONT_TESTS=OFF \
        -DKCONT_BENCH=OFF >/dev/null
      if ninja -C build-install -j"$(kcont_jobs)" && bash packaging/test-install.sh build-install; then
        passed
      else
        failed install
      fi
      ;;
    package)
      echo "=== kcont tests: Debian packages (build, dpkg -i, serve, dpkg -P) ==="
      if bash packaging/test-deb.sh; then passed; else failed package; fi
      ;;
    soak)
      for model in kcont threads; do
        echo "=== kcont tests: soak ($model model, ${KCONT_SOAK_MINUTES:-2} min) ==="
        if ROUND=30 KILL_EVERY=2 bash scripts/soak.sh "${KCONT_SOAK_MINUTES:-2}" "$model"; then
          passed
        else
          failed "soak ($model model)"
        fi
      done
      ;;
    *) echo "unknown stage $s" >&2; exit 2 ;;
  esac
done
echo "test stages: $ok passed, $fail failed"
for f in "${failed[@]}"; do echo "FAILED: $f"; done
[ "$fail" -eq 0 ]
