#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# The main job: builds kcont-nfsd (release) and runs it in the foreground.
# With no arguments it serves a demo export it creates itself
# (/tmp/kcont-nfsd-demo) on 127.0.0.1, NFS port 20490, MOUNT port 20048;
# the ready line prints an nfs-ls command to try.  Arguments go to
# kcont-nfsd (see `scripts/run.sh --help` and docs/nfsd.md).  Ctrl-C stops
# it cleanly.  Needs root (file handles use open_by_handle_at).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
kcont_ensure_deps
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKCONT_TESTS=OFF -DKCONT_BENCH=ON >/dev/null
ninja -C build -j"$(kcont_jobs)" kcont-nfsd >&2
exec ./build/nfsd/kcont-nfsd "$@"
