#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# lint.sh -- the lint stage of the test command: zero findings, kept at zero.
#   1. clang-format: every tracked C and C++ file matches .clang-format;
#   2. shellcheck: every tracked shell script (by name or by #! line), with
#      the settings and reasoned exclusions in .shellcheckrc;
#   3. clang-tidy: the libraries (core, io, vfs, nfsd) and the installed
#      tools, with the checks and reasoned exclusions in .clang-tidy
#      (bugprone-*, concurrency-*, performance-*; warnings are errors).
# Usage: scripts/lint.sh [format|shell|tidy]...   (default: all three)
# clang-tidy reads BUILD_DIR/compile_commands.json (default build-debug,
# configured here if missing).  Prints each finding and a count per tool;
# exits non-zero if any tool found anything.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/deps.sh
. scripts/deps.sh
kcont_ensure_deps clang-format-14 clang-tidy-14 shellcheck git

build_dir=${BUILD_DIR:-build-debug}
tools=${*:-format shell tidy}
failed=0

lint_format() {
  local f bad=0 files
  mapfile -t files < <(git ls-files '*.c' '*.cc' '*.h' '*.hpp')
  for f in "${files[@]}"; do
    if ! clang-format-14 --dry-run -Werror "$f" 2>/dev/null; then
      echo "clang-format: $f differs from .clang-format (fix: clang-format-14 -i $f)"
      bad=$((bad + 1))
    fi
  done
  echo "lint: clang-format: ${#files[@]} files, $bad not formatted"
  [ "$bad" -eq 0 ]
}

shell_scripts() {
  local f
  git ls-files | while read -r f; do
    case $f in
      *.sh) echo "$f" ;;
      *.*) ;;
      *) [ -f "$f" ] && head -n1 "$f" | grep -qE '^#!.*\b(ba)?sh\b' && echo "$f" ;;
    esac
  done
}

lint_shell() {
  local files n rc=0
  mapfile -t files < <(shell_scripts)
  shellcheck -x "${files[@]}" || rc=$?
  n=$(shellcheck -x -f gcc "${files[@]}" | wc -l || true)
  echo "lint: shellcheck: ${#files[@]} scripts, $n findings"
  [ "$rc" -eq 0 ]
}

lint_tidy() {
  local out rc=0 n
  if [ ! -f "$build_dir/compile_commands.json" ]; then
    cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DKCONT_BENCH=OFF >/dev/null
  fi
  out=$(mktemp)
  # The library sources and the tools installed with them; tests and
  # benchmarks are not part of what ships.
  run-clang-tidy-14 -p "$build_dir" -j "$(kcont_jobs)" -quiet \
    '/(core|io|vfs|nfsd)/(src|tools)/[^/]*\.cc$' 2>&1 | sed 's/\x1b\[[0-9;]*m//g' >"$out" || rc=$?
  grep -E '(warning|error):' "$out" | grep -v '^[0-9]* warnings* generated' | sort -u || true
  n=$(grep -cE ': (warning|error): .*\[[a-z]' "$out" || true)
  echo "lint: clang-tidy: $(grep -c '^clang-tidy-14 ' "$out" || true) files, $n findings"
  rm -f "$out"
  [ "$rc" -eq 0 ] && [ "$n" -eq 0 ]
}

for t in $tools; do
  case $t in
    format) lint_format || failed=$((failed + 1)) ;;
    shell) lint_shell || failed=$((failed + 1)) ;;
    tidy) lint_tidy || failed=$((failed + 1)) ;;
    *) echo "lint.sh: unknown tool $t (format, shell or tidy)" >&2; exit 2 ;;
  esac
done
[ "$failed" -eq 0 ]
