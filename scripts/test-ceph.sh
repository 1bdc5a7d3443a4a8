#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# test-ceph.sh -- the ceph stage of the test command: builds BUILD_DIR
# (Debug unless configured otherwise) with the CephFS back end, brings a
# single-node Ceph cluster up under a temporary directory
# (scripts/ceph-cluster.sh), runs every ctest test labelled "ceph" against
# it (KCONT_TEST_CEPH_CONF names its ceph.conf), and takes the cluster down
# again, whatever happened.
#
#   scripts/test-ceph.sh [BUILD_DIR]        (default build-debug)
#
# Fails -- never skips -- when the back end was not built (no tests
# labelled ceph), when the cluster does not come up, or when a test fails.
# KCONT_CEPH_KEEP=1 leaves the cluster up and prints where it is.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
kcont_ensure_deps ceph-mon ceph-mgr ceph-osd ceph-mds ceph-common python3-cephfs

build=${1:-build-debug}
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -G Ninja -DKCONT_BENCH=OFF -DCMAKE_BUILD_TYPE=Debug >/dev/null
fi
cmake -S . -B "$build" -DKCONT_CEPH=ON >/dev/null  # the back end is the point: required
ninja -C "$build" -j"$(kcont_jobs)"
count=$(ctest --test-dir "$build" -N -L ceph | sed -n 's/^Total Tests: //p')
if [ "${count:-0}" -eq 0 ]; then
  echo "test-ceph: no tests labelled ceph in $build" >&2
  exit 1
fi

dir=$(mktemp -d /tmp/kcont-ceph-XXXXXX)
down() {
  if [ "${KCONT_CEPH_KEEP:-0}" = 1 ]; then
    echo "test-ceph: cluster left up: conf $dir/ceph.conf (scripts/ceph-cluster.sh down $dir)"
    return
  fi
  bash scripts/ceph-cluster.sh down "$dir" || true
  rm -rf "$dir"
}
trap down EXIT
bash scripts/ceph-cluster.sh up "$dir"
KCONT_TEST_CEPH_CONF=$dir/ceph.conf ctest --test-dir "$build" --output-on-failure -j1 -L ceph
