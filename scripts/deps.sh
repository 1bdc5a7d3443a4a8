# SPDX-License-Identifier: BSD-2-Clause
# shellcheck shell=bash
# Sourced by the scripts: installs the Debian packages the build needs when
# any is missing (you are root on a fresh Debian 12 machine; nothing else is
# downloaded).
kcont_ensure_deps() {
  local pkgs=(cmake ninja-build g++ pkg-config liburing-dev libgtest-dev
              libbenchmark-dev libboost-dev libasio-dev libuv1-dev
              iperf3 curl python3 libnfs-dev libnfs-utils libcli11-dev
              libspdlog-dev libfuse3-dev fuse3 libsystemd-dev
              python3-prometheus-client libcephfs-dev libssl-dev "$@")
  local missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "kcont: installing ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

kcont_jobs() { nproc 2>/dev/null || echo 2; }

# kcont_wait_ready LOG PID: waits until kcont-nfsd's stderr LOG says it is
# ready.  0 then; 1 if process PID exits first or 30 s pass (a bound
# against a hang, not a timing).
kcont_wait_ready() {
  local _
  for _ in $(seq 300); do
    grep -q 'kcont-nfsd: ready' "$1" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  grep -q 'kcont-nfsd: ready' "$1" 2>/dev/null
}
