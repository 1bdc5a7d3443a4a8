#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# packaging/test-install.sh BUILD_DIR -- installs a built kcont into a
# temporary prefix and checks that a program outside the tree can use it:
# the files are where they belong, and packaging/consumer builds and runs
# twice, once with find_package(kcont) (CMake) and once with
# `pkg-config --cflags --libs kcont` (a plain compiler command).  Exits
# non-zero on the first failure, saying what failed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ne 1 ] || [ ! -f "$1/CMakeCache.txt" ]; then
  echo "usage: $0 BUILD_DIR (a configured and built kcont build)" >&2
  exit 2
fi
build=$1
tmp=$(mktemp -d /tmp/kcont-install.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

echo "== cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log"
libdir=$(sed -n 's/^CMAKE_INSTALL_LIBDIR:PATH=//p' "$build/CMakeCache.txt")
missing=0
for f in include/kcont/kcont.h include/kcont/version.h include/kcont/buf.h \
  "$libdir/libkcont_core.a" "$libdir/libkcont_io.a" \
  "$libdir/cmake/kcont/kcontConfig.cmake" "$libdir/cmake/kcont/kcontConfigVersion.cmake" \
  "$libdir/cmake/kcont/kcontTargets.cmake" "$libdir/pkgconfig/kcont.pc" \
  "$libdir/pkgconfig/kcont-io.pc"; do
  if [ ! -e "$prefix/$f" ]; then
    echo "FAIL: $f was not installed"
    missing=1
  fi
done
[ "$missing" -eq 0 ] || exit 1
echo "PASS: headers, libraries, CMake package and pkg-config files installed" \
  "($(wc -l <"$tmp/install.log") files)"

echo "== the consumer with find_package(kcont)"
cmake -S packaging/consumer -B "$tmp/cmake-build" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" \
  >"$tmp/consumer.log" 2>&1 || {
  cat "$tmp/consumer.log"
  echo "FAIL: configuring the consumer with find_package(kcont)"
  exit 1
}
ninja -C "$tmp/cmake-build" >>"$tmp/consumer.log" 2>&1 || {
  cat "$tmp/consumer.log"
  echo "FAIL: building the consumer against kcont::core"
  exit 1
}
"$tmp/cmake-build/consumer"
echo "PASS: find_package(kcont) + kcont::core"

echo "== the consumer with pkg-config"
export PKG_CONFIG_PATH=$prefix/$libdir/pkgconfig
flags=$(pkg-config --cflags --libs kcont)
echo "   pkg-config --cflags --libs kcont: $flags"
# shellcheck disable=SC2086  # pkg-config prints several words
c++ -O1 -o "$tmp/pc-consumer" packaging/consumer/consumer.cc $flags
"$tmp/pc-consumer"
echo "PASS: pkg-config kcont"
