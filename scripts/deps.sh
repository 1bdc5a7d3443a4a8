# SPDX-License-Identifier: BSD-2-Clause
# Sourced by the scripts: installs the Debian packages the build needs when
# any is missing (you are root on a fresh Debian 12 machine; nothing else is
# downloaded).
kcont_ensure_deps() {
  local pkgs=(cmake ninja-build g++ pkg-config liburing-dev libgtest-dev
              libbenchmark-dev libboost-dev libasio-dev libuv1-dev
              iperf3 curl python3 libnfs-dev libnfs-utils libcli11-dev
              libspdlog-dev libfuse3-dev fuse3 libsystemd-dev
              python3-prometheus-client "$@")
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
