#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# ceph-cluster.sh -- a single-node Ceph test cluster with a CephFS, for the
# tests and benchmarks of the CephFS back end (issue 26).  No systemd, no
# cephx, nothing outside DIR: one mon, one mgr, one bluestore OSD on a
# sparse file, one mds, and a file system "cephfs" on two size-1 pools.
#
#   scripts/ceph-cluster.sh up DIR [--port-base N] [--osd-size SIZE]
#   scripts/ceph-cluster.sh down DIR
#   scripts/ceph-cluster.sh status DIR
#
# up      installs what is missing (ceph-mon, ceph-mgr, ceph-osd, ceph-mds,
#         ceph-common; apt-get update first), writes DIR/ceph.conf, creates
#         and starts the daemons (each in the foreground of its own session,
#         its pid in DIR/pids/NAME, its log in DIR/log/NAME.log), and waits
#         until the cluster is HEALTH_OK with an active mds.  Prints the
#         seconds it took and the conf path.  Fails (exit 1, naming the
#         daemon and the tail of its log) if a daemon dies or 180 s pass
#         -- a bound against a hang, not a timing.  DIR must not hold a
#         cluster already (down it first; remove DIR for a fresh one).
# down    stops every daemon up started, by pid (SIGTERM, then SIGKILL
#         after 20 s), OSD last but one and mon last; DIR stays (logs).
# status  prints `ceph -s` of the cluster in DIR (exit 1 if it is not up).
#
# --port-base N  the mon listens on N (msgr2), the other daemons bind in
#                [N + 1, N + 99]; default 16789 (below the ephemeral range,
#                /proc/sys/net/ipv4/ip_local_port_range).
# --osd-size S   the OSD's sparse block file (default 4G; blocks are only
#                allocated as data is written).
#
# Clients: `ceph -c DIR/ceph.conf ...`, libcephfs with that conf (no
# keyring, no user: auth is off), python3-cephfs likewise.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then usage; fi
shift 2
port_base=16789
osd_size=4G
while (($#)); do
  case "$1" in
    --port-base) port_base=${2:?--port-base needs a port}; shift 2 ;;
    --osd-size) osd_size=${2:?--osd-size needs a size}; shift 2 ;;
    *) echo "ceph-cluster: unknown argument $1" >&2; usage ;;
  esac
done
case "$port_base" in '' | *[!0-9]*) echo "ceph-cluster: --port-base must be a number" >&2; exit 2 ;; esac
if ((port_base < 1024 || port_base + 99 > 65535)); then
  echo "ceph-cluster: --port-base $port_base: the ports [N, N + 99] must lie in 1024..65535" >&2
  exit 2
fi

log() { printf 'ceph-cluster: %s\n' "$*" >&2; }
die() {
  printf 'ceph-cluster: error: %s\n' "$*" >&2
  exit 1
}

conf=$dir/ceph.conf
daemons=(mon.a mgr.x osd.0 mds.a)

ceph_cli() { timeout 30 ceph -c "$conf" "$@"; }

pid_of() { cat "$dir/pids/$1" 2>/dev/null || true; }

alive() {  # alive NAME: its recorded process is running
  local pid
  pid=$(pid_of "$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

stop_daemon() {
  local name=$1 pid _
  pid=$(pid_of "$name")
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 200); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name (pid $pid) ignored SIGTERM for 20 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$dir/pids/$name"
}

down() {
  [ -d "$dir" ] || die "$dir: no such directory"
  local name
  for name in mds.a mgr.x osd.0 mon.a; do stop_daemon "$name"; done
  log "down ($dir kept: logs in $dir/log)"
}

# start NAME ARGS...: runs a daemon in the foreground of its own session,
# output to its log, and records its pid.
start() {
  local name=$1
  shift
  setsid "$@" -c "$conf" -f >>"$dir/log/$name.out" 2>&1 </dev/null &
  echo $! >"$dir/pids/$name"
}

# check_alive: fails naming a daemon that died, with its log's tail.
check_alive() {
  local name
  for name in "${daemons[@]}"; do
    [ -f "$dir/pids/$name" ] || continue
    if ! alive "$name"; then
      log "$name exited; the end of its output and log:"
      tail -n 20 "$dir/log/$name.out" "$dir/log/$name.log" 2>/dev/null >&2 || true
      down >/dev/null 2>&1 || true
      die "$name did not stay up"
    fi
  done
}

# wait_for WHAT CMD...: until CMD succeeds, while every daemon lives; at most
# until the deadline.
wait_for() {
  local what=$1
  shift
  until "$@" >/dev/null 2>&1; do
    check_alive
    if ((SECONDS > deadline)); then
      log "gave up waiting for $what after 180 s; ceph -s:"
      ceph_cli -s >&2 2>&1 || true
      down >/dev/null 2>&1 || true
      die "the cluster in $dir did not come up"
    fi
    sleep 0.5
  done
}

health_ok() { ceph_cli health | grep -q '^HEALTH_OK'; }
mds_active() { ceph_cli mds stat | grep -q 'up:active'; }

up() {
  # shellcheck source=scripts/deps.sh
  . "$(dirname "$0")/deps.sh"
  kcont_ensure_deps ceph-mon ceph-mgr ceph-osd ceph-mds ceph-common uuid-runtime
  for name in "${daemons[@]}"; do
    alive "$name" && die "$dir already runs $name (pid $(pid_of "$name")): down it first"
  done
  [ -e "$dir/mon.a" ] && die "$dir holds an old cluster: remove it first"
  mkdir -p "$dir"/{pids,log,run,mon.a,mgr.x,osd.0,mds.a}
  dir=$(cd "$dir" && pwd)
  conf=$dir/ceph.conf
  local fsid mon_port t0=$SECONDS
  fsid=$(uuidgen)
  mon_port=$port_base
  cat >"$conf" <<EOF
# written by scripts/ceph-cluster.sh: a single-node test cluster
[global]
fsid = $fsid
mon_host = [v2:127.0.0.1:$mon_port]
ms_bind_ipv4 = true
ms_bind_ipv6 = false
ms_bind_port_min = $((port_base + 1))
ms_bind_port_max = $((port_base + 99))
public_addr = 127.0.0.1
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
auth_allow_insecure_global_id_reclaim = false
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_autoscale_mode = off
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
mon_data_avail_warn = 1
mon_data_avail_crit = 0
osd_crush_chooseleaf_type = 0
run_dir = $dir/run
admin_socket = $dir/run/\$name.asok
log_file = $dir/log/\$name.log
pid_file = $dir/run/\$name.pid
crash_dir = $dir/crash
keyring = /dev/null
[mon]
mon_data = $dir/\$name
mon_cluster_log_file = $dir/log/cluster.log
[mgr]
mgr_data = $dir/\$name
[osd]
osd_data = $dir/\$name
osd_objectstore = bluestore
bluestore_block_create = true
bluestore_block_size = $(numfmt --from=iec "$osd_size")
bluestore_fsck_on_mkfs = false
osd_memory_target = 1073741824
[mds]
mds_data = $dir/\$name
EOF
  log "creating the monitor (fsid $fsid, port $mon_port)"
  monmaptool --create --clobber --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" \
    "$dir/monmap" >"$dir/log/monmaptool.out" 2>&1 || die "monmaptool failed: $(tail -3 "$dir/log/monmaptool.out")"
  ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" >"$dir/log/mon.a.mkfs" 2>&1 ||
    die "ceph-mon --mkfs failed: $(tail -5 "$dir/log/mon.a.mkfs")"
  local deadline=$((SECONDS + 180))
  start mon.a ceph-mon -i a
  wait_for "the monitor" ceph_cli mon stat
  start mgr.x ceph-mgr -i x
  log "creating the OSD ($osd_size sparse block file)"
  local uuid id
  uuid=$(uuidgen)
  id=$(ceph_cli osd new "$uuid") || die "ceph osd new failed"
  [ "$id" = 0 ] || die "ceph osd new gave id $id, not 0 ($dir reused?)"
  ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$uuid" >"$dir/log/osd.0.mkfs" 2>&1 ||
    die "ceph-osd --mkfs failed: $(tail -5 "$dir/log/osd.0.mkfs")"
  start osd.0 ceph-osd -i 0
  wait_for "the OSD" bash -c "ceph -c '$conf' osd stat 2>/dev/null | grep -q '1 up'"
  log "creating the file system"
  ceph_cli osd pool create cephfs_metadata 8 >/dev/null 2>&1 || die "could not create pool cephfs_metadata"
  ceph_cli osd pool create cephfs_data 16 >/dev/null 2>&1 || die "could not create pool cephfs_data"
  ceph_cli osd pool set cephfs_metadata size 1 --yes-i-really-mean-it >/dev/null 2>&1
  ceph_cli osd pool set cephfs_data size 1 --yes-i-really-mean-it >/dev/null 2>&1
  ceph_cli fs new cephfs cephfs_metadata cephfs_data >/dev/null 2>&1 || die "ceph fs new failed"
  start mds.a ceph-mds -i a
  wait_for "an active mds" mds_active
  wait_for "HEALTH_OK" health_ok
  log "up in $((SECONDS - t0)) s: conf $conf, file system cephfs"
  echo "$conf"
}

status() {
  [ -f "$conf" ] || die "$dir holds no cluster (no ceph.conf)"
  local name state=0
  for name in "${daemons[@]}"; do
    if alive "$name"; then
      echo "$name: running (pid $(pid_of "$name"))"
    else
      echo "$name: not running"
      state=1
    fi
  done
  ceph_cli -s || state=1
  return "$state"
}

case "$cmd" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) usage ;;
esac
