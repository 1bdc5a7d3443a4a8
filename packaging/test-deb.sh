#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# packaging/test-deb.sh -- builds the Debian packages (debian/, with
# dpkg-buildpackage) from a copy of the tracked files, installs them with
# dpkg -i, checks the man pages render without warnings and the unit
# verifies, starts the installed kcont-nfsd the way its unit's ExecStart
# says (with /etc/default/kcont-nfsd and /etc/kcont-nfsd/exports), lists
# and reads a file with nfs-ls/nfs-cat, adds an export and reloads with
# SIGHUP, stops it with SIGTERM, then removes the packages (dpkg -r keeps
# the conffile, dpkg -P removes it).  The CephFS back end is a package of
# its own (kcont-nfsd-ceph): kcont-nfsd must not depend on Ceph's
# libraries, and without it an export with fs=ceph is refused naming the
# missing back end; with it the server loads the module (no cluster here:
# the mount fails naming the conf it could not read).  Needs root; changes /etc while it runs
# and restores it.  Exits non-zero on the first failure, saying what failed.
# KCONT_DEB_OUT=DIR keeps the .deb files there.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "test-deb: needs root (dpkg -i)" >&2
  exit 2
fi
. scripts/deps.sh
kcont_ensure_deps debhelper pandoc dpkg-dev man-db
for f in /etc/kcont-nfsd/exports /usr/sbin/kcont-nfsd; do
  if [ -e "$f" ]; then
    echo "test-deb: $f exists: kcont-nfsd is installed here already; not touching it" >&2
    exit 2
  fi
done

tmp=$(mktemp -d /tmp/kcont-deb.XXXXXX)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill -9 "$server_pid" 2>/dev/null
  dpkg -P kcont-nfsd-ceph kcont-nfsd libkcont-dev >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  [ -f "$tmp/server.log" ] && sed 's/^/    | /' "$tmp/server.log" | tail -n 20
  exit 1
}
pass() { echo "PASS: $*"; }

version=$(dpkg-parsechangelog -l debian/changelog -S Version)
src=$tmp/kcont-$version
mkdir -p "$src"
git ls-files -z | xargs -0 cp --parents -t "$src"
echo "== dpkg-buildpackage (kcont $version)"
(cd "$src" && DEB_BUILD_OPTIONS="nocheck noautodbgsym parallel=$(kcont_jobs)" \
  dpkg-buildpackage -b -us -uc >"$tmp/build.log" 2>&1) || {
  tail -n 40 "$tmp/build.log"
  fail "dpkg-buildpackage"
}
debs=("$tmp"/kcont-nfsd_"${version}"_*.deb "$tmp"/libkcont-dev_"${version}"_*.deb)
ceph_deb=("$tmp"/kcont-nfsd-ceph_"${version}"_*.deb)
for d in "${debs[@]}" "${ceph_deb[0]}"; do [ -f "$d" ] || fail "no $d"; done
pass "built ${debs[*]##*/} ${ceph_deb[0]##*/}"
depends=$(dpkg-deb -f "${debs[0]}" Depends)
if grep -qi 'ceph\|rados' <<<"$depends"; then fail "kcont-nfsd depends on Ceph: $depends"; fi
dpkg-deb -f "${ceph_deb[0]}" Depends | grep -q libcephfs2 ||
  fail "kcont-nfsd-ceph does not depend on libcephfs2: $(dpkg-deb -f "${ceph_deb[0]}" Depends)"
pass "kcont-nfsd needs none of Ceph's libraries; kcont-nfsd-ceph depends on libcephfs2"
if [ -n "${KCONT_DEB_OUT:-}" ]; then
  mkdir -p "$KCONT_DEB_OUT"
  cp "${debs[@]}" "$KCONT_DEB_OUT/"
fi
dpkg-deb -c "${debs[0]}" | awk '{print "    " $6}' | grep -v '/$'

echo "== dpkg -i"
dpkg -i "${debs[@]}" >"$tmp/dpkg.log" 2>&1 || {
  cat "$tmp/dpkg.log"
  fail "dpkg -i"
}
[ -x /usr/sbin/kcont-nfsd ] || fail "/usr/sbin/kcont-nfsd not installed"
dpkg-query -W -f='${Conffiles}\n' kcont-nfsd | grep -q /etc/kcont-nfsd/exports ||
  fail "/etc/kcont-nfsd/exports is not a conffile"
pass "installed; /etc/kcont-nfsd/exports and /etc/default/kcont-nfsd are conffiles"

for page in kcont-nfsd kcont-exports kcont buf sock vfs; do
  warnings=$(MANWIDTH=80 man --warnings "$page" 2>&1 >/dev/null || echo "man $page failed")
  [ -z "$warnings" ] || fail "man $page: $warnings"
done
pass "man kcont-nfsd, kcont-exports, kcont, buf, sock, vfs render without warnings"

unit=/lib/systemd/system/kcont-nfsd.service
[ -f "$unit" ] || unit=/usr/lib/systemd/system/kcont-nfsd.service
[ -f "$unit" ] || fail "the systemd unit is not installed"
if command -v systemd-analyze >/dev/null 2>&1; then
  out=$(systemd-analyze verify "$unit" 2>&1 | grep -v 'rpcbind.service' || true)
  [ -z "$out" ] || fail "systemd-analyze verify $unit: $out"
  pass "systemd-analyze verify $unit"
else
  echo "    (systemd-analyze not installed: unit not verified)"
fi

# The export, and the server started as the unit's ExecStart says.
export_dir=$tmp/export
second=$tmp/second
mkdir -p "$export_dir" "$second"
echo "served by the installed package" >"$export_dir/hello.txt"
echo "a second export" >"$second/two.txt"
printf '%s 127.0.0.1(rw,no_root_squash)\n' "$export_dir" >>/etc/kcont-nfsd/exports
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
# shellcheck disable=SC1091
. /etc/default/kcont-nfsd
nfs_port=$(echo "$KCONT_NFSD_OPTS" | sed -n 's/.*--nfs-port \([0-9]*\).*/\1/p')
mount_port=$(echo "$KCONT_NFSD_OPTS" | sed -n 's/.*--mount-port \([0-9]*\).*/\1/p')
echo "== $exec_start  (KCONT_NFSD_OPTS=\"$KCONT_NFSD_OPTS\")"
# shellcheck disable=SC2086  # the unit's command line, split as systemd does
eval "set -- ${exec_start//\$KCONT_NFSD_OPTS/$KCONT_NFSD_OPTS}"
"$@" 2>"$tmp/server.log" &
server_pid=$!
kcont_wait_ready "$tmp/server.log" "$server_pid" || fail "the installed server did not start"
pass "the installed server started with the installed configuration"

url() { echo "nfs://127.0.0.1$1?version=3&nfsport=$nfs_port&mountport=$mount_port"; }
timeout 60 nfs-ls "$(url "$export_dir")" | grep -q hello.txt || fail "nfs-ls of the export"
[ "$(timeout 60 nfs-cat "$(url "$export_dir/hello.txt")")" = "served by the installed package" ] ||
  fail "nfs-cat of hello.txt"
pass "nfs-ls and nfs-cat through the installed server"

metrics=$(echo "$KCONT_NFSD_OPTS" | sed -n 's/.*--metrics \([^ ]*\).*/\1/p')
if [ -n "$metrics" ]; then
  out=$(kcont-nfsstat "$metrics" 2>&1) || fail "kcont-nfsstat $metrics: $out"
  echo "$out" | grep -E '^READ +[0-9]+' | awk '{exit !($2 >= 1)}' ||
    fail "kcont-nfsstat shows no READ: $out"
  pass "kcont-nfsstat reads the installed server's --metrics $metrics"
fi

printf '%s 127.0.0.1(ro)\n' "$second" >>/etc/kcont-nfsd/exports
kill -HUP "$server_pid"
for _ in $(seq 100); do
  grep -q 'SIGHUP: reloaded /etc/kcont-nfsd/exports (2 exports)' "$tmp/server.log" && break
  sleep 0.1
done
grep -q 'SIGHUP: reloaded /etc/kcont-nfsd/exports (2 exports)' "$tmp/server.log" ||
  fail "SIGHUP did not reload the exports"
[ "$(timeout 60 nfs-cat "$(url "$second/two.txt")")" = "a second export" ] ||
  fail "nfs-cat from the export added by the reload"
pass "SIGHUP reloaded the exports; the new export serves"

kill -TERM "$server_pid"
wait "$server_pid" || fail "the server did not exit 0 after SIGTERM"
server_pid=""
pass "SIGTERM stopped the server (status 0)"

# fs=ceph without the back end's package, then with it (the server is
# started on a file of its own: a start-up error is all this checks).
printf '/cephfs fs=ceph,conf=%s/none.conf 127.0.0.1(rw)\n' "$tmp" >"$tmp/ceph.exports"
out=$(timeout 60 /usr/sbin/kcont-nfsd --exports "$tmp/ceph.exports" --bind 127.0.0.1 \
  --nfs-port "$nfs_port" --mount-port "$mount_port" 2>&1) && fail "fs=ceph started without its back end"
grep -q "no back end 'ceph' in this installation" <<<"$out" ||
  fail "fs=ceph without kcont-nfsd-ceph: the error does not name the missing back end: $out"
pass "without kcont-nfsd-ceph, an fs=ceph export is refused naming the back end"
dpkg -i "${ceph_deb[0]}" >"$tmp/dpkg-ceph.log" 2>&1 || {
  cat "$tmp/dpkg-ceph.log"
  fail "dpkg -i kcont-nfsd-ceph"
}
out=$(timeout 60 /usr/sbin/kcont-nfsd --exports "$tmp/ceph.exports" --bind 127.0.0.1 \
  --nfs-port "$nfs_port" --mount-port "$mount_port" 2>&1) && fail "fs=ceph started without a cluster"
grep -q "none.conf" <<<"$out" ||
  fail "with kcont-nfsd-ceph, the error does not come from the back end: $out"
pass "with kcont-nfsd-ceph the server loads the back end (its error names the conf)"
dpkg -P kcont-nfsd-ceph >/dev/null 2>&1 || fail "dpkg -P kcont-nfsd-ceph"

dpkg -r kcont-nfsd libkcont-dev >/dev/null 2>&1 || fail "dpkg -r"
[ ! -e /usr/sbin/kcont-nfsd ] || fail "dpkg -r left /usr/sbin/kcont-nfsd"
[ -e /etc/kcont-nfsd/exports ] || fail "dpkg -r removed the changed conffile"
dpkg -P kcont-nfsd libkcont-dev >/dev/null 2>&1 || fail "dpkg -P"
[ ! -e /etc/kcont-nfsd/exports ] || fail "dpkg -P left /etc/kcont-nfsd/exports"
pass "dpkg -r kept the conffile, dpkg -P removed it"
