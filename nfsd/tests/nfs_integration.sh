#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# nfs_integration.sh -- real-client integration test of kcont-nfsd.
#
# usage: bash nfs_integration.sh SERVER_BINARY DRIVER_BINARY MODEL [SIEGE_BINARY
#        [HANGFS_BINARY [SANITIZER [NFSFUSE_BINARY [SELECTION]]]]]
#        bash nfs_integration.sh --list
#        bash nfs_integration.sh --check-groups DRIVER_BINARY
#   SELECTION (comma-separated; default all): a section (bad_export,
#   siege_*, metrics, metrics_flood, hung), a fixture (export, exports, memory: its start, every
#   case and its stop), or one case of a fixture, FIXTURE.CASE (see
#   "Fixtures" below).  --list prints every section and case, one per line:
#   ctest registers each as its own test, nfs_integration_MODEL_NAME (the
#   dot becomes an underscore).  --check-groups: the driver's procedure
#   groups are the ones this script runs.
#   MODEL is kcont or threads (passed to --model); with SIEGE_BINARY
#   (nfs_siege.c) the hostile-client steps run too; with HANGFS_BINARY
#   (hangfs.c, a FUSE file system that stops answering) and /dev/fuse the
#   hung-file-system steps run.  SANITIZER names the sanitizer the server
#   was built with, if any: its allocator keeps freed memory, so the RSS
#   check is skipped.  With NFSFUSE_BINARY (kcont-nfsfuse, FUSE on libnfs)
#   and /dev/fuse, real POSIX programs run on the export: tar x, diff -r,
#   a metadata comparison, rm -r.
#
# Starts the server on free TCP ports with a temporary export directory,
# waits for "kcont-nfsd: ready" on its stderr, then talks to it with real NFS
# clients: the libnfs tools (nfs-ls, nfs-cp, nfs-cat) and nfs_driver (see
# nfs_driver.c: every NFSv3 procedure group, big directory listings,
# concurrent clients, handles surviving a kill -9 + restart, root squash,
# read-only export), and, with nfs_siege, hostile clients: idle, slowloris
# and never-reading connections are closed, full connection tables make
# room, and a bystander gets through all of it.  Also checks start-up
# errors and a clean SIGTERM shutdown.
# Every step prints PASS/FAIL; a failing step prints its output and the tail
# of the server log.  Exit status is non-zero if any step failed.

# Cases and sections run through names built from the selection (run_case,
# section_$sel), so shellcheck cannot see them called:
# shellcheck disable=SC2317
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# The nfs_driver procedure groups (nfs_driver.c; `nfs_driver groups` must
# print the same list: checked by --check-groups).
DRIVER_GROUPS="lookup read_write access setattr write_commit create rename link_remove symlink mknod mkdir_rmdir readdir fsinfo bad_handles"
driver_cases() { for g in $DRIVER_GROUPS; do printf 'driver_%s ' "$g"; done; }
EXPORT_CASES="start ls cp cat_precreated $(driver_cases)dirlist stress read_after_write posix_client identity restart port_in_use stop"
MEMORY_CASES="start $(driver_cases)stress read_after_write stop"
EXPORTS_CASES="start squash ro_write_refused ro_read ro_driver not_exported stop"
CEPH_CASES="start ls $(driver_cases)dirlist stress read_after_write posix_client restart two_servers osd_stall stop"
fixture_cases() { # fixture_cases FIXTURE
	case $1 in
	export) echo "$EXPORT_CASES" ;;
	memory) echo "$MEMORY_CASES" ;;
	exports) echo "$EXPORTS_CASES" ;;
	ceph) echo "$CEPH_CASES" ;;
	esac
}

SECTIONS_ONLY="bad_export siege_limits siege_defaults siege_budget siege_memory_wait siege_memory_floor metrics metrics_flood hung"
# ceph: an export on the CephFS back end (needs a cluster: KCONT_TEST_CEPH_CONF;
# ctest labels its cases "ceph", run by the test command's ceph stage).
FIXTURES="export exports memory ceph"

# selections: every selectable name, in the order a full run takes them.
selections() {
	local f c
	for f in $FIXTURES; do
		for c in $(fixture_cases "$f"); do echo "$f.$c"; done
	done
	for f in $SECTIONS_ONLY; do echo "$f"; done
}

case ${1:-} in
--list)
	selections
	exit 0
	;;
--check-groups)
	if [ $# -ne 2 ]; then
		echo "usage: $0 --check-groups DRIVER_BINARY" >&2
		exit 2
	fi
	got=$("$2" groups | tr '\n' ' ')
	if [ "${got% }" = "$DRIVER_GROUPS" ]; then
		echo "PASS: the driver's groups are the ones run here: $DRIVER_GROUPS"
		exit 0
	fi
	echo "FAIL: the driver's groups ($got) are not the ones run here ($DRIVER_GROUPS)" >&2
	exit 1
	;;
esac
if [ $# -lt 3 ] || [ $# -gt 8 ]; then
	echo "usage: $0 SERVER_BINARY DRIVER_BINARY MODEL [SIEGE_BINARY [HANGFS_BINARY [SANITIZER [NFSFUSE_BINARY [SELECTION]]]]]" >&2
	exit 2
fi
SERVER=$1
DRIVER=$2
MODEL=$3
SIEGE=${4:-}
HANGFS=${5:-}
SANITIZER=${6:-}
NFSFUSE=${7:-}
# SELECTION: expanded to fixture cases and sections, each checked.
SELECTION=${8:-$FIXTURES $SECTIONS_ONLY}
SELECTED=()
for sel in ${SELECTION//,/ }; do
	if [[ " $FIXTURES " == *" $sel "* ]]; then
		for c in $(fixture_cases "$sel"); do SELECTED+=("$sel.$c"); done
	elif selections | grep -qxF -- "$sel"; then
		SELECTED+=("$sel")
	else
		echo "$0: unknown selection '$sel' (one of: $FIXTURES, $(selections | tr '\n' ' '))" >&2
		exit 2
	fi
done

# not_tested WHAT: a part that cannot run here.  Under CI=true (the CI
# machine has root and FUSE) that is a failure; elsewhere a loud skip.
not_tested() {
	if [ "${CI:-}" = true ]; then
		echo "FAIL: NOT TESTED under CI=true: $1" >&2
		NOT_TESTED_FAILED=1
		if declare -F fail >/dev/null; then fail "$1" "not tested under CI=true"; fi
	else
		echo "SKIP: NOT TESTED: $1"
	fi
}
NOT_TESTED_FAILED=0
if [ "$(id -u)" -ne 0 ]; then
	not_tested "the whole integration test (the server needs root: open_by_handle_at)"
	[ "$NOT_TESTED_FAILED" -eq 0 ] || exit 1
	exit 77
fi
for tool in nfs-ls nfs-cp nfs-cat sha256sum timeout cmp; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "FAIL: required tool '$tool' not found" >&2
		exit 2
	fi
done
for bin in "$SERVER" "$DRIVER"; do
	if [ ! -x "$bin" ]; then
		echo "FAIL: '$bin' is not an executable" >&2
		exit 2
	fi
done

# TMP: this run's directory.  Under ctest a fixture's cases share theirs,
# KCONT_IT_DIR (kept between them; its stop case removes it once the
# server stopped cleanly); otherwise a fresh one, removed on exit.
if [ -n "${KCONT_IT_DIR:-}" ]; then
	TMP=$KCONT_IT_DIR
	mkdir -p "$TMP" || exit 2
else
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/kcont-nfs-it.XXXXXX") || exit 2
fi
REMOVE_TMP=0
[ -n "${KCONT_IT_DIR:-}" ] || REMOVE_TMP=1
EXPORT=$TMP/export
DIR2=$TMP/squash
DIR3=$TMP/readonly
mkdir -p "$TMP/local"

PASSED=0
FAILED=0
FAILED_STEPS=()
SERVER_PID=""
SERVER_LOG=""
SERVER_SUPERVISED=0
ALL_PIDS=()
FUSE_MOUNT=""

cleanup() {
	local p
	# the FUSE daemon first: its death fails every request hung in it, so
	# nothing below waits on it (and rm -rf never enters a hung mount)
	for p in "${ALL_PIDS[@]}"; do
		if kill -0 "$p" 2>/dev/null; then
			# children first: SIGKILL of a `timeout` leaves its command
			# running (a libnfs client whose server is gone spins)
			pkill -9 -P "$p" 2>/dev/null
			kill -9 "$p" 2>/dev/null
			wait "$p" 2>/dev/null
		fi
	done
	if [ -n "$FUSE_MOUNT" ]; then
		fusermount3 -u -z "$FUSE_MOUNT" 2>/dev/null || umount -l "$FUSE_MOUNT" 2>/dev/null
	fi
	# a fixture's server outlives this process only under ctest
	if [ -z "${KCONT_IT_DIR:-}" ] && [ -s "$TMP/server.pid" ] && [ ! -e "$TMP/server.status" ]; then
		kill -9 "$(cat "$TMP/server.pid")" 2>/dev/null
	fi
	if [ "$REMOVE_TMP" = 1 ]; then
		rm -rf "$TMP"
		# the fixtures' common parent, once the last of them is gone
		[ -z "${KCONT_IT_DIR:-}" ] || rmdir "$(dirname "$TMP")" 2>/dev/null
	elif [ "$FAILED" -ne 0 ]; then
		echo "(logs kept in $TMP)"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# indent / quote_block: a command's output, indented under the step that ran it.
indent() { sed 's/^/    /'; }
quote_block() { sed 's/^/    | /'; }

log_tail() {
	if [ -n "$SERVER_LOG" ] && [ -f "$SERVER_LOG" ]; then
		echo "    --- tail of server log ($SERVER_LOG) ---"
		tail -n 40 "$SERVER_LOG" | sed 's/^/    | /'
	fi
}

pass() {
	PASSED=$((PASSED + 1))
	echo "PASS: $1"
}

fail() {
	FAILED=$((FAILED + 1))
	FAILED_STEPS+=("$1")
	echo "FAIL: $1${2:+ -- $2}"
	log_tail
}

# step NAME TIMEOUT CMD...: run CMD, PASS if it exits 0.  On success only the
# summary of a driver run is shown (plus notes); on failure its whole output.
step() {
	local name=$1 tmo=$2 out=$TMP/step.out rc
	shift 2
	echo "=== $name"
	timeout --kill-after=10 "$tmo" "$@" >"$out" 2>&1
	rc=$?
	if [ "$rc" -eq 0 ]; then
		grep -E '^(note:|FAIL:)' "$out" | sed 's/^/    /'
		echo "    $(grep -c '^ok:' "$out") checks ok; $(tail -n 1 "$out")"
		pass "$name"
	else
		tail -n 120 "$out" | sed 's/^/    /'
		[ "$rc" -eq 124 ] && echo "    (timed out after $tmo s)"
		fail "$name" "exit status $rc"
	fi
	return $rc
}

free_ports() {
	# two distinct free TCP ports on 127.0.0.1, below the ephemeral range
	# (a port from bind(0) could be taken by some client's connect meanwhile)
	if command -v python3 >/dev/null 2>&1; then
		python3 - <<'EOF'
import random, socket
low = 32768
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    pass
got = []
while len(got) < 2:
    p = random.randrange(20000, max(low, 20002))
    if p in got:
        continue
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", p))
        got.append(p)
    except OSError:
        pass
    finally:
        s.close()
print(" ".join(map(str, got)))
EOF
		return
	fi
	local found=() p
	while [ ${#found[@]} -lt 2 ]; do
		p=$((20000 + RANDOM % 12000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null &&
			[[ " ${found[*]} " != *" $p "* ]]; then
			found+=("$p")
		fi
	done
	echo "${found[@]}"
}

# start_server LOG ARGS... : starts in the background, sets SERVER_PID
start_server() {
	SERVER_LOG=$1
	shift
	"$SERVER" "$@" --bind 127.0.0.1 --nfs-port "$NFS_PORT" \
		--mount-port "$MOUNT_PORT" --model "$MODEL" \
		>"$SERVER_LOG.stdout" 2>"$SERVER_LOG" &
	SERVER_PID=$!
	ALL_PIDS+=("$SERVER_PID")
}

# wait_ready: 0 once the log says ready; 1 on early exit or 30 s timeout
wait_ready() {
	local i
	for ((i = 0; i < 300; i++)); do
		if grep -q 'kcont-nfsd: ready' "$SERVER_LOG" 2>/dev/null; then
			return 0
		fi
		if ! kill -0 "$SERVER_PID" 2>/dev/null; then
			server_reap
			echo "    server exited early with status $SERVER_STATUS"
			echo "    --- server log ---"
			sed 's/^/    | /' "$SERVER_LOG"
			return 1
		fi
		sleep 0.1
	done
	echo "    server not ready after 30 s; log:"
	sed 's/^/    | /' "$SERVER_LOG"
	return 1
}

# server_reap: SERVER_STATUS, the exit status of the server that has
# exited (or been killed): from wait for one this shell started, from the
# supervisor's status file for a fixture's (written as soon as it is
# reaped; 255 if it never appears).
server_reap() {
	local i
	if [ "$SERVER_SUPERVISED" = 1 ]; then
		for ((i = 0; i < 100; i++)); do
			[ -s "$TMP/server.status" ] && break
			sleep 0.1
		done
		SERVER_STATUS=$(cat "$TMP/server.status" 2>/dev/null || echo 255)
	else
		wait "$SERVER_PID" 2>/dev/null
		SERVER_STATUS=$?
	fi
}

# stop_server_term [SIGNAL]: sends SIGTERM (or SIGNAL); 0 if the server
# exits with status 0 within 10 s
stop_server_term() {
	local i sig=${1:-TERM}
	kill "-$sig" "$SERVER_PID" 2>/dev/null
	for ((i = 0; i < 100; i++)); do
		kill -0 "$SERVER_PID" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$SERVER_PID" 2>/dev/null; then
		kill -9 "$SERVER_PID" 2>/dev/null
		server_reap
		echo "    server still running 10 s after SIG$sig (killed)"
		return 1
	fi
	server_reap
	if [ "$SERVER_STATUS" -ne 0 ]; then
		echo "    server exited with status $SERVER_STATUS after SIG$sig"
		return 1
	fi
	return 0
}

url() { # url DIR [FILE]
	echo "nfs://127.0.0.1$1${2:+/$2}?version=3&nfsport=$NFS_PORT&mountport=$MOUNT_PORT"
}

finish() {
	echo
	echo "nfs integration ($MODEL; $SELECTION): $PASSED passed, $FAILED failed"
	if [ $FAILED -ne 0 ]; then
		printf '  failed: %s\n' "${FAILED_STEPS[@]}"
		exit 1
	fi
	exit 0
}

# ---------------------------------------------------------------------------
# Fixtures: one server shared by independent cases.
#
# A fixture (export, memory, exports) is a server that its "start" case
# starts and its "stop" case stops; each other case talks to that server
# and leaves the export as it found it, so any case runs alone after start
# and a failure names the behaviour that broke.  ctest registers every case
# as a test of its own, nfs_integration_MODEL_FIXTURE_CASE, start as the
# FIXTURES_SETUP and stop as the FIXTURES_CLEANUP of the others, so
# `ctest -R nfs_integration_kcont_export_driver_setattr` runs start, that
# case and stop.  Those are separate processes: the fixture's state lives in
# the directory KCONT_IT_DIR names (ports and log in fixture.env) and the
# server runs detached under a supervisor shell that writes its pid and,
# when it exits, its exit status next to it.  Without KCONT_IT_DIR a
# fixture's name runs start, every case and stop in this one process.
#
# Stop checks that the export holds only what start put there, then that
# SIGTERM ends the server with status 0 within 10 s.

# fixture_server_start LOG ARGS...: starts the fixture's server detached
# from this process (it outlives a ctest setup test): a supervisor shell in
# a session of its own runs it, writes its pid to $TMP/server.pid and, once
# it exits, its exit status to $TMP/server.status.  Sets SERVER_PID and
# SERVER_LOG and saves them with the ports in $TMP/fixture.env.
fixture_server_start() {
	local supervisor
	SERVER_LOG=$1
	shift
	rm -f "$TMP/server.pid" "$TMP/server.status"
	# shellcheck disable=SC2016 # expanded by the supervisor shell
	setsid bash -c '"$@" & echo $! >"$0.pid.new" && mv "$0.pid.new" "$0.pid"
		wait $!; echo $? >"$0.status.new"; mv "$0.status.new" "$0.status"' \
		"$TMP/server" "$SERVER" "$@" --bind 127.0.0.1 --nfs-port "$NFS_PORT" \
		--mount-port "$MOUNT_PORT" --model "$MODEL" \
		</dev/null >"$SERVER_LOG.stdout" 2>"$SERVER_LOG" &
	supervisor=$!
	while [ ! -s "$TMP/server.pid" ] && kill -0 "$supervisor" 2>/dev/null; do
		sleep 0.05
	done
	SERVER_PID=$(cat "$TMP/server.pid" 2>/dev/null)
	SERVER_SUPERVISED=1
	printf 'NFS_PORT=%q\nMOUNT_PORT=%q\nSERVER_LOG=%q\n' \
		"$NFS_PORT" "$MOUNT_PORT" "$SERVER_LOG" >"$TMP/fixture.env"
}

# fixture_load: the fixture's ports, log and server, saved by its start
# case; 1 (and a FAIL) if start has not run or its server is gone.
fixture_load() {
	if [ ! -s "$TMP/fixture.env" ] || [ ! -s "$TMP/server.pid" ]; then
		fail "fixture server" "not started (its start case did not run or failed)"
		return 1
	fi
	# shellcheck disable=SC1091 # written by fixture_server_start
	. "$TMP/fixture.env"
	SERVER_PID=$(cat "$TMP/server.pid")
	SERVER_SUPERVISED=1
	if [ -e "$TMP/server.status" ]; then
		fail "fixture server" "exited with status $(cat "$TMP/server.status")"
		return 1
	fi
}

# ---------------------------------------------------------------------------
# fixture export: --export DIR (rw, no_root_squash), with content created
# in the directory before the server starts.
export_start() {
	rm -rf "${EXPORT:?}" "$TMP/local" "$TMP/fixture.env"
	mkdir -p "$EXPORT" "$TMP/local"
	read -r NFS_PORT MOUNT_PORT < <(free_ports)
	echo "export $EXPORT, nfs port $NFS_PORT, mount port $MOUNT_PORT, model $MODEL"
	printf 'hello from the export directory\n' >"$EXPORT/hello.txt"
	head -c 777777 /dev/urandom >"$EXPORT/precreated.bin"
	mkdir "$EXPORT/subdir"
	echo "=== start server (--export)"
	fixture_server_start "$TMP/server1.log" --export "$EXPORT"
	if wait_ready; then
		pass "start server (--export)"
	else
		fail "start server (--export)"
	fi
}

export_ls() {
	echo "=== nfs-ls export root"
	if out=$(timeout 60 nfs-ls "$(url "$EXPORT")" 2>&1) &&
		grep -q 'hello\.txt' <<<"$out" && grep -q 'precreated\.bin' <<<"$out" &&
		grep -q 'subdir' <<<"$out"; then
		indent <<<"$out"
		pass "nfs-ls export root"
	else
		indent <<<"$out"
		fail "nfs-ls export root" "listing incomplete or nfs-ls failed"
	fi
}

# nfs-cp 5 MiB up and down, nfs-cat: the three sha256 sums and the file on
# the server's disk must match.
export_cp() {
	local ok=1 want on_server down cat_sum
	echo "=== nfs-cp 5 MiB up/down + nfs-cat"
	head -c $((5 * 1024 * 1024)) /dev/urandom >"$TMP/local/up.bin"
	want=$(sha256sum <"$TMP/local/up.bin" | cut -d' ' -f1)
	timeout 120 nfs-cp "$TMP/local/up.bin" "$(url "$EXPORT" up.bin)" || {
		echo "    nfs-cp up failed"
		ok=0
	}
	on_server=$(sha256sum <"$EXPORT/up.bin" 2>/dev/null | cut -d' ' -f1)
	timeout 120 nfs-cp "$(url "$EXPORT" up.bin)" "$TMP/local/down.bin" || {
		echo "    nfs-cp down failed"
		ok=0
	}
	down=$(sha256sum <"$TMP/local/down.bin" 2>/dev/null | cut -d' ' -f1)
	timeout 120 nfs-cat "$(url "$EXPORT" up.bin)" >"$TMP/local/cat.bin" || {
		echo "    nfs-cat failed"
		ok=0
	}
	cat_sum=$(sha256sum <"$TMP/local/cat.bin" | cut -d' ' -f1)
	echo "    local     $want"
	echo "    on server $on_server"
	echo "    nfs-cp    $down"
	echo "    nfs-cat   $cat_sum"
	rm -f "$EXPORT/up.bin" "$TMP/local/up.bin" "$TMP/local/down.bin" "$TMP/local/cat.bin"
	if [ "$ok" -eq 1 ] && [ "$want" = "$on_server" ] && [ "$want" = "$down" ] &&
		[ "$want" = "$cat_sum" ]; then
		pass "nfs-cp 5 MiB up/down + nfs-cat"
	else
		fail "nfs-cp 5 MiB up/down + nfs-cat" "checksums differ or a tool failed"
	fi
}

# files created in the export directory by the local file system
export_cat_precreated() {
	echo "=== nfs-cat of pre-created files"
	if timeout 60 nfs-cat "$(url "$EXPORT" precreated.bin)" >"$TMP/local/pre.bin" &&
		cmp "$TMP/local/pre.bin" "$EXPORT/precreated.bin" &&
		timeout 60 nfs-cat "$(url "$EXPORT" hello.txt)" >"$TMP/local/hello.txt" &&
		cmp "$TMP/local/hello.txt" "$EXPORT/hello.txt"; then
		pass "nfs-cat of pre-created files"
	else
		fail "nfs-cat of pre-created files" "bytes differ or nfs-cat failed"
	fi
}

# driver_case DIR GROUP: one nfs_driver procedure group (its own directory,
# created and removed by the driver) on the export at DIR.
driver_case() {
	step "nfs_driver $2" 300 "$DRIVER" "$2" "$(url "$1")"
}

export_dirlist() {
	step "nfs_driver dirlist 5000" 300 "$DRIVER" dirlist "$(url "$EXPORT")" 5000
}

export_stress() {
	step "nfs_driver stress 4 clients 8 s" 120 "$DRIVER" stress "$(url "$EXPORT")" 4 8s
}

# Read-after-write: a WRITE's reply, then a READ of the block must see it,
# while 6 other clients read the same 4 blocks (the kcont model's READ used
# to join an older in-flight read: 7 stale in 22,490 pairs).
export_read_after_write() {
	step "nfs_driver raw: read-after-write with 6 readers, 8 s" 120 \
		"$DRIVER" raw "$(url "$EXPORT")" 6 8
}

# nfsfuse_usable: kcont-nfsfuse, /dev/fuse and fusermount3 are here.
nfsfuse_usable() {
	[ -n "$NFSFUSE" ] && [ -x "$NFSFUSE" ] && [ -e /dev/fuse ] &&
		command -v fusermount3 >/dev/null
}

# A real POSIX client: the C++ library's headers (~800 files) through
# kcont-nfsfuse (FUSE on libnfs, no client caching: every stat, create,
# write, setattr, readdir and remove of tar, diff and rm reaches the
# server), compared by content and by type, mode, size and mtime, then
# removed.
# nfsfuse_mount URL MNT LOG: mounts URL at MNT with kcont-nfsfuse (its pid
# in NFSFUSE_PID); waits for the mount (the event), at most 60 s; 1, the
# daemon stopped, if it did not appear.
nfsfuse_mount() {
	"$NFSFUSE" "$1" "$2" >"$3" 2>&1 &
	NFSFUSE_PID=$!
	ALL_PIDS+=("$NFSFUSE_PID")
	for _ in $(seq 600); do
		mountpoint -q "$2" && return 0
		kill -0 "$NFSFUSE_PID" 2>/dev/null || break
		sleep 0.1
	done
	mountpoint -q "$2" && return 0
	kill "$NFSFUSE_PID" 2>/dev/null
	return 1
}

# dir_size_free: find's "%P %y %m %s %Ts" lines with a directory's size
# left out (a file system's own business: CephFS reports the bytes below it).
dir_size_free() { awk '$(NF - 3) == "d" { $(NF - 1) = "-" } 1'; }

posix_client() { # posix_client URL TREE
	local name="POSIX client: tar x, diff -r, rm -r of $2 through kcont-nfsfuse"
	local mnt=$TMP/fusemnt out=$TMP/posix.out base fpid rc=0
	base=$(basename "$2")
	echo "=== $name"
	mkdir -p "$mnt"
	nfsfuse_mount "$1" "$mnt" "$TMP/nfsfuse.log" || {
		fail "$name" "kcont-nfsfuse did not mount: $(tail -n 3 "$TMP/nfsfuse.log")"
		return
	}
	fpid=$NFSFUSE_PID
	{
		timeout 300 tar xf "$TMP/tree.tar" -C "$mnt" &&
			timeout 300 diff -r "$2" "$mnt/$base" &&
			(cd "$(dirname "$2")" && find "$base" -printf '%P %y %m %s %Ts\n' | dir_size_free | sort) >"$TMP/tree.a" &&
			(cd "$mnt" && timeout 300 find "$base" -printf '%P %y %m %s %Ts\n' | dir_size_free | sort) >"$TMP/tree.b" &&
			diff "$TMP/tree.a" "$TMP/tree.b" &&
			timeout 300 rm -r "$mnt/$base" &&
			[ ! -e "$EXPORT/$base" ]
	} >"$out" 2>&1 || rc=$?
	fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null
	wait "$fpid" 2>/dev/null
	if [ "$rc" -eq 0 ]; then
		pass "$name ($(wc -l <"$TMP/tree.a") entries)"
	else
		tail -n 40 "$out" | sed 's/^/    /'
		fail "$name" "exit status $rc"
	fi
}
# Identity and special files through kcont-nfsfuse: each call carries the
# calling process's uid, gid and groups, so the server decides.  A file
# made by uid 65534 is owned by it on the server's disk; uid 65534 cannot
# append to root's 0644 file, but can to a 0660 file of a supplementary
# group it holds; a FIFO and a character device made through
# the mount are a FIFO and a device on the disk.  The mount point is a
# directory of its own that uid 65534 may reach.
fuse_identity() { # fuse_identity URL
	local name="identity and special files through kcont-nfsfuse"
	local mnt fpid rc=0 as_nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
	mnt=$(mktemp -d /tmp/kcont-nfsfuse-id.XXXXXX)
	chmod 755 "$mnt"
	echo "=== $name"
	nfsfuse_mount "$1" "$mnt" "$TMP/nfsfuse-id.log" || {
		fail "$name" "kcont-nfsfuse did not mount: $(tail -n 3 "$TMP/nfsfuse-id.log")"
		rmdir "$mnt"
		return
	}
	fpid=$NFSFUSE_PID
	{
		mkdir "$mnt/idtest" && chmod 1777 "$mnt/idtest" &&
			"${as_nobody[@]}" touch "$mnt/idtest/by-nobody" &&
			[ "$(stat -c %u:%g "$EXPORT/idtest/by-nobody")" = 65534:65534 ] &&
			echo root >"$mnt/idtest/roots" && chmod 0644 "$mnt/idtest/roots" &&
			! "${as_nobody[@]}" sh -c "echo x >>'$mnt/idtest/roots'" 2>/dev/null &&
			[ "$(cat "$EXPORT/idtest/roots")" = root ] &&
			echo g >"$mnt/idtest/group" && chown 0:4242 "$mnt/idtest/group" &&
			chmod 0660 "$mnt/idtest/group" &&
			setpriv --reuid=65534 --regid=65534 --groups=4242 sh -c "echo x >>'$mnt/idtest/group'" &&
			[ "$(cat "$EXPORT/idtest/group")" = "$(printf 'g\nx')" ] &&
			mkfifo -m 0640 "$mnt/idtest/fifo" && [ -p "$EXPORT/idtest/fifo" ] &&
			[ "$(stat -c %a "$EXPORT/idtest/fifo")" = 640 ] &&
			mknod "$mnt/idtest/null" c 1 3 && [ -c "$EXPORT/idtest/null" ] &&
			[ "$(stat -c %t:%T "$EXPORT/idtest/null")" = 1:3 ] &&
			rm -r "$mnt/idtest"
	} >"$TMP/identity.out" 2>&1 || rc=$?
	fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null
	wait "$fpid" 2>/dev/null
	rmdir "$mnt" 2>/dev/null
	if [ "$rc" -eq 0 ]; then
		pass "$name"
	else
		find "$EXPORT/idtest" -printf '    %M %U:%G %p\n' 2>&1
		tail -n 20 "$TMP/identity.out" | sed 's/^/    /'
		fail "$name" "exit status $rc"
	fi
	rm -rf "$EXPORT/idtest"
}

# posix_tree_client URL: a real POSIX client on the export at URL, the C++
# library's headers (~800 files) through kcont-nfsfuse (see posix_client).
posix_tree_client() {
	local tree
	tree=$(find /usr/include/c++ -mindepth 1 -maxdepth 1 -type d 2>/dev/null | sort -V | tail -n 1)
	if nfsfuse_usable && [ -n "$tree" ]; then
		tar cf "$TMP/tree.tar" -C "$(dirname "$tree")" "$(basename "$tree")"
		posix_client "$1" "$tree"
		rm -f "$TMP/tree.tar"
	else
		not_tested "the POSIX-client step (needs kcont-nfsfuse, /dev/fuse, fusermount3, /usr/include/c++/N)"
	fi
}

export_posix_client() { posix_tree_client "$(url "$EXPORT")"; }

export_identity() {
	if nfsfuse_usable; then
		fuse_identity "$(url "$EXPORT")"
	else
		not_tested "the identity step (needs kcont-nfsfuse, /dev/fuse, fusermount3)"
	fi
}

# restart_case WHAT DIR LOG SERVER_ARGS...: the driver saves handles and
# data of the export DIR, the fixture's server is killed (-9) and started
# again on the same ports with SERVER_ARGS (its log LOG), and the driver
# checks them: handles and data survive, the write verifier changes.
restart_case() {
	local what=$1 dir=$2 log=$3
	shift 3
	if step "nfs_driver save$what" 120 "$DRIVER" save "$(url "$dir")" "$TMP/restart.state"; then
		echo "=== kill -9 and restart on the same ports"
		kill -9 "$SERVER_PID" 2>/dev/null
		server_reap
		fixture_server_start "$log" "$@"
		if wait_ready; then
			pass "restart after kill -9$what"
			step "nfs_driver check (after restart)$what" 120 \
				"$DRIVER" check "$(url "$dir")" "$TMP/restart.state"
		else
			fail "restart after kill -9$what"
		fi
	fi
	rm -f "$TMP/restart.state"
}

export_restart() {
	restart_case "" "$EXPORT" "$TMP/server1-restarted.log" --export "$EXPORT"
}

# starting a second server on a port in use must fail clearly
export_port_in_use() {
	local busy_log=$TMP/busy.log rc
	echo "=== second server on a port in use"
	timeout 20 "$SERVER" --export "$EXPORT" --bind 127.0.0.1 \
		--nfs-port "$NFS_PORT" --mount-port "$MOUNT_PORT" \
		--model "$MODEL" >/dev/null 2>"$busy_log"
	rc=$?
	sed 's/^/    | /' "$busy_log" | head -n 10
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && grep -q -E "$NFS_PORT|$MOUNT_PORT" "$busy_log" &&
		! grep -q 'kcont-nfsd: ready' "$busy_log"; then
		pass "second server on a port in use exits non-zero naming the port"
	else
		fail "second server on a port in use exits non-zero naming the port" \
			"exit status $rc (124 = still running after 20 s)"
	fi
}

# fixture_stop WHAT ALLOWED...: the export holds only the names ALLOWED
# (every case left it as it found it), then SIGTERM stops the server.
fixture_stop() {
	local what=$1 dir=$2 leftover name
	shift 2
	if [ -n "$dir" ]; then
		echo "=== the export holds only what start put there"
		leftover=$(find "$dir" -mindepth 1 -maxdepth 1 -printf '%f\n' | while read -r name; do
			[[ " $* " == *" $name "* ]] || printf '%s ' "$name"
		done)
		if [ -z "$leftover" ]; then
			pass "the export holds only what start put there"
		else
			fail "the export holds only what start put there" "left over: $leftover"
		fi
	fi
	echo "=== SIGTERM stops the $what server with status 0 within 10 s"
	if stop_server_term; then
		pass "SIGTERM stops the $what server with status 0 within 10 s"
		# under ctest, the fixture's directory goes once all is well
		[ -z "${KCONT_IT_DIR:-}" ] || [ "$FAILED" -ne 0 ] || REMOVE_TMP=1
	else
		fail "SIGTERM stops the $what server with status 0 within 10 s"
	fi
}

export_stop() {
	fixture_stop "--export" "$EXPORT" hello.txt precreated.bin subdir
}

# --export of a directory that does not exist fails clearly (no fixture)
section_bad_export() {
	local bad_log=$TMP/nonexistent.log rc P1 P2
	echo "=== --export /nonexistent fails clearly"
	read -r P1 P2 < <(free_ports)
	timeout 20 "$SERVER" --export /nonexistent/kcont-nfsd-test --bind 127.0.0.1 \
		--nfs-port "$P1" --mount-port "$P2" --model "$MODEL" \
		>/dev/null 2>"$bad_log"
	rc=$?
	sed 's/^/    | /' "$bad_log" | head -n 10
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && grep -q '/nonexistent/kcont-nfsd-test' "$bad_log" &&
		! grep -q 'kcont-nfsd: ready' "$bad_log"; then
		pass "--export /nonexistent exits non-zero with a message naming it"
	else
		fail "--export /nonexistent exits non-zero with a message naming it" \
			"exit status $rc (124 = still running after 20 s)"
	fi
}

# ---------------------------------------------------------------------------
# fixture exports: --exports FILE with a root_squash export and a read-only
# export.
exports_start() {
	rm -rf "${DIR2:?}" "${DIR3:?}" "$TMP/local" "$TMP/fixture.env"
	mkdir -p "$DIR2" "$DIR3" "$TMP/local"
	chmod 1777 "$DIR2"
	printf 'read-only content\n' >"$DIR3/existing.txt"
	cat >"$TMP/exports" <<EOT
# kcont-nfsd integration test exports
$DIR2 127.0.0.1(rw,root_squash,anonuid=65534,anongid=65534)
$DIR3 *(ro)
EOT
	read -r NFS_PORT MOUNT_PORT < <(free_ports)
	echo "=== start server (--exports FILE) on ports $NFS_PORT/$MOUNT_PORT"
	sed 's/^/    | /' "$TMP/exports"
	fixture_server_start "$TMP/server2.log" --exports "$TMP/exports"
	if wait_ready; then
		pass "start server (--exports FILE)"
	else
		fail "start server (--exports FILE)"
	fi
}

exports_squash() {
	step "nfs_driver squash (root_squash export)" 60 \
		"$DRIVER" squash "$(url "$DIR2")" 65534
}

exports_ro_write_refused() {
	local rc
	echo "=== nfs-cp into the read-only export fails"
	head -c 4096 /dev/urandom >"$TMP/local/ro.bin"
	timeout 60 nfs-cp "$TMP/local/ro.bin" "$(url "$DIR3" ro.bin)" >"$TMP/ro.out" 2>&1
	rc=$?
	sed 's/^/    | /' "$TMP/ro.out" | head -n 5
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ ! -e "$DIR3/ro.bin" ]; then
		pass "nfs-cp into the read-only export fails"
	else
		fail "nfs-cp into the read-only export fails" \
			"exit status $rc; file present: $([ -e "$DIR3/ro.bin" ] && echo yes || echo no)"
		rm -f "$DIR3/ro.bin"
	fi
}

exports_ro_read() {
	echo "=== nfs-cat from the read-only export"
	if timeout 60 nfs-cat "$(url "$DIR3" existing.txt)" >"$TMP/local/ro-cat.txt" &&
		cmp "$TMP/local/ro-cat.txt" "$DIR3/existing.txt"; then
		pass "nfs-cat from the read-only export"
	else
		fail "nfs-cat from the read-only export"
	fi
}

exports_ro_driver() {
	step "nfs_driver ro (read-only export)" 60 \
		"$DRIVER" ro "$(url "$DIR3")" existing.txt
}

exports_not_exported() {
	echo "=== mount of a directory that is not exported is refused"
	if timeout 60 nfs-ls "$(url "$TMP")" >"$TMP/noexp.out" 2>&1; then
		sed 's/^/    | /' "$TMP/noexp.out" | head -n 5
		fail "mount of a directory that is not exported is refused" \
			"nfs-ls of $TMP succeeded"
	else
		sed 's/^/    | /' "$TMP/noexp.out" | head -n 3
		pass "mount of a directory that is not exported is refused"
	fi
}

exports_stop() {
	fixture_stop "--exports" "$DIR3" existing.txt
}

# ---------------------------------------------------------------------------
# fixture memory: the same protocol code on the in-memory VFS back end
# (--memory-export): nothing of it is on disk, so the drivers check it only
# through the protocol.
MEM=/kcont-nfs-it-memory
memory_start() {
	rm -f "$TMP/fixture.env"
	read -r NFS_PORT MOUNT_PORT < <(free_ports)
	echo "=== start server (--memory-export $MEM) on ports $NFS_PORT/$MOUNT_PORT"
	fixture_server_start "$TMP/server3.log" --memory-export "$MEM" --memory-size 256
	if wait_ready; then
		pass "start server (--memory-export)"
	else
		fail "start server (--memory-export)"
	fi
}

memory_stress() {
	step "nfs_driver stress 4 clients 5 s (in-memory back end)" 120 \
		"$DRIVER" stress "$(url "$MEM")" 4 5s
}

memory_read_after_write() {
	step "nfs_driver raw: read-after-write (in-memory back end)" 120 \
		"$DRIVER" raw "$(url "$MEM")" 6 5
}

memory_stop() {
	fixture_stop "--memory-export" ""
}

# ---------------------------------------------------------------------------
# fixture ceph: kcont-nfsd with two exports -- /ceph on the CephFS back end
# (a directory of its own in the cluster KCONT_TEST_CEPH_CONF names, made
# and removed through python3-cephfs, another client of the file system)
# and /cephlocal, a local directory beside it.
CEPH_EXPORT=/ceph
CEPH_LOCAL=$TMP/cephlocal
# ceph_py OP ARGS...: the cluster through python3-cephfs (Debian's python3):
# mkdir PATH | put PATH LOCALFILE | rmtree PATH
ceph_py() {
	/usr/bin/python3 - "$KCONT_TEST_CEPH_CONF" "$@" <<'EOF'
import sys, cephfs
conf, op, path = sys.argv[1], sys.argv[2], sys.argv[3]
fs = cephfs.LibCephFS(conffile=conf)
fs.mount()
def rmtree(p):
    d = fs.opendir(p)
    names = []
    while True:
        e = fs.readdir(d)
        if e is None:
            break
        n = e.d_name.decode()
        if n not in (".", ".."):
            names.append((n, e.is_dir()))
    fs.closedir(d)
    for n, is_dir in names:
        if is_dir:
            rmtree(p + "/" + n)
        else:
            fs.unlink(p + "/" + n)
    fs.rmdir(p)
if op == "mkdir":
    fs.mkdir(path, 0o777)
    fs.chmod(path, 0o777)
elif op == "put":
    data = open(sys.argv[4], "rb").read()
    fd = fs.open(path, "w", 0o644)
    fs.write(fd, data, 0)
    fs.fsync(fd, 0)
    fs.close(fd)
elif op == "rmtree":
    try:
        rmtree(path)
    except cephfs.ObjectNotFound:
        pass
fs.shutdown()
EOF
}

# The exports file of the fixture's servers.
ceph_exports() {
	cat >"$TMP/ceph.exports" <<EOT
$CEPH_EXPORT fs=ceph,conf=$KCONT_TEST_CEPH_CONF,path=$(cat "$TMP/ceph.path") 127.0.0.1(rw,no_root_squash)
/cephlocal fs=local,path=$CEPH_LOCAL 127.0.0.1(rw,no_root_squash)
EOT
}

ceph_start() {
	rm -f "$TMP/fixture.env"
	if [ -z "${KCONT_TEST_CEPH_CONF:-}" ]; then
		not_tested "the Ceph export (no cluster: KCONT_TEST_CEPH_CONF is not set; scripts/test-ceph.sh)"
		return
	fi
	rm -rf "$CEPH_LOCAL"
	mkdir -p "$CEPH_LOCAL"
	head -c $((1024 * 1024)) /dev/urandom >"$CEPH_LOCAL/steady.bin"
	echo "/kcont-it-$MODEL-$$" >"$TMP/ceph.path"
	printf 'hello from CephFS\n' >"$TMP/hello.txt"
	head -c $((3 * 1024 * 1024)) /dev/urandom >"$TMP/cold.bin"
	if ! ceph_py rmtree "$(cat "$TMP/ceph.path")" || ! ceph_py mkdir "$(cat "$TMP/ceph.path")" ||
		! ceph_py put "$(cat "$TMP/ceph.path")/hello.txt" "$TMP/hello.txt" ||
		! ceph_py put "$(cat "$TMP/ceph.path")/cold.bin" "$TMP/cold.bin"; then
		fail "make the export's directory in CephFS (python3-cephfs)"
		return
	fi
	ceph_exports
	read -r NFS_PORT MOUNT_PORT < <(free_ports)
	echo "=== start server (a Ceph export and a local one) on ports $NFS_PORT/$MOUNT_PORT"
	quote_block <"$TMP/ceph.exports"
	fixture_server_start "$TMP/server-ceph.log" --exports "$TMP/ceph.exports"
	if wait_ready; then
		pass "start server (a Ceph export and a local one)"
	else
		fail "start server (a Ceph export and a local one)"
	fi
}

ceph_ls() {
	echo "=== nfs-ls of the Ceph export"
	if out=$(timeout 60 nfs-ls "$(url "$CEPH_EXPORT")" 2>&1) && grep -q 'hello\.txt' <<<"$out" &&
		grep -q 'cold\.bin' <<<"$out"; then
		indent <<<"$out"
		pass "nfs-ls of the Ceph export"
	else
		indent <<<"$out"
		fail "nfs-ls of the Ceph export" "listing incomplete or nfs-ls failed"
	fi
}

ceph_dirlist() {
	step "nfs_driver dirlist 3000 (Ceph)" 300 "$DRIVER" dirlist "$(url "$CEPH_EXPORT")" 3000
}

ceph_stress() {
	step "nfs_driver stress 4 clients 5 s (Ceph)" 120 "$DRIVER" stress "$(url "$CEPH_EXPORT")" 4 5s
}

ceph_read_after_write() {
	step "nfs_driver raw: read-after-write (Ceph)" 120 "$DRIVER" raw "$(url "$CEPH_EXPORT")" 6 5
}

ceph_posix_client() { posix_tree_client "$(url "$CEPH_EXPORT")"; }

# Handles and data survive kill -9 and a restart: a new libcephfs client
# resolves the saved handles (ceph_ll_lookup_inode).
ceph_restart() {
	restart_case " (Ceph)" "$CEPH_EXPORT" "$TMP/server-ceph-restarted.log" \
		--exports "$TMP/ceph.exports"
}

# Two servers in front of one CephFS: a file written through one is read
# back exactly through the other, and its handle from one works on the
# other (same export path, same key on the export's root).
ceph_two_servers() {
	local p1 p2 log=$TMP/server-ceph-second.log pid ok=1 name="a second server on the same CephFS reads back what the first wrote"
	read -r p1 p2 < <(free_ports)
	echo "=== $name (ports $p1/$p2)"
	"$SERVER" --exports "$TMP/ceph.exports" --bind 127.0.0.1 --nfs-port "$p1" \
		--mount-port "$p2" --model "$MODEL" >"$log.stdout" 2>"$log" &
	pid=$!
	ALL_PIDS+=("$pid")
	for _ in $(seq 300); do
		grep -q 'kcont-nfsd: ready' "$log" 2>/dev/null && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	head -c $((2 * 1024 * 1024 + 777)) /dev/urandom >"$TMP/local/two.bin"
	local second="nfs://127.0.0.1$CEPH_EXPORT/two.bin?version=3&nfsport=$p1&mountport=$p2"
	if ! grep -q 'kcont-nfsd: ready' "$log"; then
		ok=0
		tail -n 20 "$log" | sed 's/^/    | /'
	elif ! timeout 120 nfs-cp "$TMP/local/two.bin" "$(url "$CEPH_EXPORT" two.bin)" ||
		! timeout 120 nfs-cat "$second" >"$TMP/local/two.back" ||
		! cmp "$TMP/local/two.bin" "$TMP/local/two.back"; then
		ok=0
	elif ! timeout 120 "$DRIVER" save "$(url "$CEPH_EXPORT")" "$TMP/two.state" ||
		! timeout 120 "$DRIVER" check "nfs://127.0.0.1$CEPH_EXPORT?version=3&nfsport=$p1&mountport=$p2" "$TMP/two.state"; then
		ok=0
	fi
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	rm -f "$TMP/local/two.bin" "$TMP/local/two.back" "$TMP/two.state"
	if [ "$ok" = 1 ]; then pass "$name"; else fail "$name"; fi
}

# A stopped OSD (SIGSTOP) stalls the Ceph export; the local export on the
# same server keeps answering READs meanwhile (each read must complete --
# the event; the timeout only bounds a hang), and after SIGCONT the
# stalled READ of the Ceph export completes with the right data.
ceph_osd_stall() {
	local osd name="a stalled OSD stalls only the Ceph export" cat_pid i ok=1 reads=0
	osd=$(cat "$(dirname "$KCONT_TEST_CEPH_CONF")/pids/osd.0" 2>/dev/null)
	if [ -z "$osd" ] || ! kill -0 "$osd" 2>/dev/null; then
		fail "$name" "no OSD pid in $(dirname "$KCONT_TEST_CEPH_CONF")/pids/osd.0"
		return
	fi
	echo "=== $name"
	kill -STOP "$osd"
	# cold.bin was written by another client: its data is not in this
	# server's cache, so the READ waits for the stopped OSD
	timeout 300 nfs-cat "$(url "$CEPH_EXPORT" cold.bin)" >"$TMP/cold.back" 2>"$TMP/cold.err" &
	cat_pid=$!
	ALL_PIDS+=("$cat_pid")
	for ((i = 0; i < 30; i++)); do
		if timeout 60 nfs-cat "$(url /cephlocal steady.bin)" >"$TMP/steady.back" 2>/dev/null &&
			cmp -s "$TMP/steady.back" "$CEPH_LOCAL/steady.bin"; then
			reads=$((reads + 1))
		else
			ok=0
			break
		fi
	done
	local stalled=0
	kill -0 "$cat_pid" 2>/dev/null && stalled=1
	kill -CONT "$osd"
	if ! wait "$cat_pid" || ! cmp -s "$TMP/cold.back" "$TMP/cold.bin"; then
		echo "    the Ceph export's READ did not complete correctly after SIGCONT: $(head -c 300 "$TMP/cold.err")"
		ok=0
	fi
	echo "    local READs during the stall: $reads of 30; the Ceph READ was still waiting at the end: $stalled"
	if [ "$stalled" != 1 ]; then
		echo "    the Ceph export's READ did not wait for the stopped OSD: the step proved nothing"
		ok=0
	fi
	rm -f "$TMP/cold.back" "$TMP/cold.err" "$TMP/steady.back"
	if [ "$ok" = 1 ]; then pass "$name"; else fail "$name"; fi
}

ceph_stop() {
	fixture_stop "Ceph-export" "$CEPH_LOCAL" steady.bin
	ceph_py rmtree "$(cat "$TMP/ceph.path" 2>/dev/null || echo /nonexistent)" || true
}

# run_case FIXTURE CASE: one case of a fixture.  Every case but start
# first loads the fixture (and fails if it is not running).
run_case() {
	local fixture=$1 case=$2 dir
	if [ "$case" != start ] && ! fixture_load; then
		return
	fi
	case $fixture in
	export) dir=$EXPORT ;;
	memory) dir=$MEM ;;
	ceph) dir=$CEPH_EXPORT ;;
	*) dir="" ;;
	esac
	case $case in
	driver_*) driver_case "$dir" "${case#driver_}" ;;
	*) "${fixture}_${case}" ;;
	esac
}

# ---------------------------------------------------------------------------
# hostile clients (nfs_siege.c, docs/reliability.md), one section per
# server configuration.  The attackers connect from other loopback
# addresses (127.0.0.2...), the bystander from 127.0.0.1.  Every wait is
# for an event (the server closing a connection, the bystander's read
# completing); the MAXSEC arguments are only a bound for a hang.
# (ctest: nfs_integration_MODEL_siege_*; the bodies are not indented)

# rss_kb: the server's resident set in KiB.
rss_kb() {
	awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status"
}

# log_count LOG WORD: the count before WORD in the server's last
# "connections (...)" line ("evicted 3" -> 3).
log_count() {
	grep 'connections (' "$1" | tail -n 1 | grep -o -E "[0-9]+ $2|$2 [0-9]+" |
		grep -o -E '[0-9]+' | head -n 1
}

# siege_setup: 0 with the siege binary and the export RELX (one 1 MiB
# file) ready; else not tested.
siege_setup() {
	if [ -z "$SIEGE" ] || [ ! -x "$SIEGE" ]; then
		not_tested "the hostile-client steps (no nfs_siege binary)"
		return 1
	fi
	RELX=$TMP/hostile
	mkdir -p "$RELX"
	head -c $((1024 * 1024)) /dev/urandom >"$RELX/big.bin"
}

# small tables and short timeouts: idle, slowloris and never-reading
# connections are closed; full tables make room.
section_siege_limits() {
siege_setup || return
read -r NFS_PORT MOUNT_PORT < <(free_ports)
echo "=== start server (small tables, short timeouts) on ports $NFS_PORT/$MOUNT_PORT"
start_server "$TMP/server4.log" --export "$RELX" --idle-timeout 1 \
	--record-timeout 2 --max-conns 8 --max-mount-conns 4 --max-conns-per-addr 6
if wait_ready; then
	pass "start server (small tables, short timeouts)"
	U=$(url "$RELX" big.bin)
	step "an idle connection is closed after --idle-timeout" 60 \
		"$SIEGE" expire "$U" 127.0.0.2 idle 30
	step "a slowloris connection is reset after --record-timeout" 60 \
		"$SIEGE" expire "$U" 127.0.0.2 slow 30
	step "a client that never reads its replies is reset after --record-timeout" 90 \
		"$SIEGE" expire "$U" 127.0.0.2 noread 30
	step "full tables (3 addresses x 6): the longest-idle connection makes room" 90 \
		"$SIEGE" siege "$U" 127.0.0.2,127.0.0.3,127.0.0.4 60 6
	echo "=== SIGINT stops the server; it counted what it did"
	if stop_server_term INT; then
		ev=$(log_count "$SERVER_LOG" evicted)
		idle=$(log_count "$SERVER_LOG" idle)
		stalled=$(log_count "$SERVER_LOG" stalled)
		grep 'connections (' "$SERVER_LOG" | tail -n 1 | sed 's/^/    | /'
		if [ "${ev:-0}" -gt 0 ] && [ "${idle:-0}" -gt 0 ] && [ "${stalled:-0}" -ge 2 ]; then
			pass "evictions, idle closes and stalled resets counted"
		else
			fail "evictions, idle closes and stalled resets counted" \
				"evicted=${ev:-?} idle=${idle:-?} stalled=${stalled:-?}"
		fi
	else
		fail "SIGINT stops the small-tables server with status 0"
	fi
else
	fail "start server (small tables, short timeouts)"
fi
}

# the default limits: 1,000 idle + 100 slowloris, own idle and busy
# connections, never-reading clients, a WRITE burst whose memory comes back.
section_siege_defaults() {
siege_setup || return
read -r NFS_PORT MOUNT_PORT < <(free_ports)
echo "=== start server (default limits) on ports $NFS_PORT/$MOUNT_PORT"
start_server "$TMP/server5.log" --export "$RELX"
if wait_ready; then
	pass "start server (default limits)"
	rss_idle=$(rss_kb)
	U=$(url "$RELX" big.bin)
	step "defaults: 1000 idle + 100 slowloris connections from one address, a bystander reads" \
		120 "$SIEGE" siege "$U" 127.0.0.2 1000 100
	step "defaults: 200 idle connections from one address: each is served, the oldest make room" \
		120 "$SIEGE" ownidle "$U" 127.0.0.5 200
	step "defaults: 128 busy connections from one address: one more is refused" \
		120 "$SIEGE" ownbusy "$U" 127.0.0.6 128
	step "defaults: 2 clients never read their 1 MiB READ replies, a bystander reads for 4 s" \
		120 "$SIEGE" noread "$U" 127.0.0.3 2 4
	if step "16 connections x 16 pipelined 1 MiB WRITEs" 300 \
		"$SIEGE" bigwrite "$U" 127.0.0.4 16 16; then
		echo "=== the server's memory comes back (RSS within 64 MiB of its idle value)"
		if [ -n "$SANITIZER" ]; then
			echo "    skipped: built with -fsanitize=$SANITIZER, whose allocator and shadow memory keep what is freed"
		else
			for ((i = 0; i < 600; i++)); do
				[ "$(rss_kb)" -le $((rss_idle + 65536)) ] && break
				sleep 0.1
			done
			echo "    RSS idle $((rss_idle / 1024)) MiB, now $(($(rss_kb) / 1024)) MiB"
			if [ "$(rss_kb)" -le $((rss_idle + 65536)) ]; then
				pass "the server's memory comes back after the WRITE burst"
			else
				fail "the server's memory comes back after the WRITE burst" "waited 60 s"
			fi
		fi
	fi
	if stop_server_term; then
		pass "SIGTERM stops the default-limits server with status 0"
		peer=$(log_count "$SERVER_LOG" 'per address')
		grep 'connections (' "$SERVER_LOG" | tail -n 1 | sed 's/^/    | /'
		if [ "${peer:-0}" -gt 0 ] &&
			grep -q -E 'refused a connection from 127\.0\.0\.[26]: it holds 128 connections, none of them idle' "$SERVER_LOG"; then
			pass "connections past the per-address limit refused, counted and logged with the address"
		else
			fail "connections past the per-address limit refused, counted and logged with the address" \
				"per-address=${peer:-?}"
		fi
	else
		fail "SIGTERM stops the default-limits server with status 0"
	fi
else
	fail "start server (default limits)"
fi
}

# a small --max-memory.  16 connections x 16 pipelined 1 MiB
# WRITEs want 256 MiB of request buffers; 8 MiB are allowed, so
# connections wait for memory (their sockets unread) and every WRITE
# is still answered, none reset for stalling.  The server's own account
# (its last stats line) must never have passed the limit, and must show
# the waits.  One worker thread (threads model): readers then read ahead
# of it and charge, so the budget binds however fast the machine is
# (with 8 workers under TSan it did not).  One slot per connection: the
# kcont model once stalled here until --record-timeout, its waiting
# connections' unread data holding every receive buffer of the CPU.
section_siege_budget() {
siege_setup || return
read -r NFS_PORT MOUNT_PORT < <(free_ports)
echo "=== start server (--max-memory 8M --slots 1) on ports $NFS_PORT/$MOUNT_PORT"
start_server "$TMP/server5b.log" --export "$RELX" --max-memory 8M --slots 1 --threads 1
if wait_ready; then
	pass "start server (--max-memory 8M)"
	U=$(url "$RELX" big.bin)
	step "under an 8 MiB budget: 16 connections x 16 pipelined 1 MiB WRITEs" 300 \
		"$SIEGE" bigwrite "$U" 127.0.0.4 16 16
	if stop_server_term; then
		line=$(grep -o 'closed [0-9]* idle + [0-9]* stalled; memory [0-9]* of 8 MiB (peak [0-9]*), [0-9]* waited' "$SERVER_LOG" | tail -n 1)
		echo "    | $line"
		peak=$(echo "$line" | sed -E 's/.*peak ([0-9]+).*/\1/')
		waited=$(echo "$line" | sed -E 's/.*\), ([0-9]+) waited/\1/')
		stalled=$(echo "$line" | sed -E 's/.* \+ ([0-9]+) stalled.*/\1/')
		if [ -n "$line" ] && [ "$peak" -le 8 ] && [ "$waited" -gt 0 ] && [ "$stalled" -eq 0 ]; then
			pass "the budget held (peak ${peak} MiB of 8), connections waited for it ($waited), none stalled"
		else
			fail "the budget held, connections waited for it, none stalled" "stats: ${line:-none}"
		fi
	else
		fail "SIGTERM stops the --max-memory server with status 0"
	fi
else
	fail "start server (--max-memory 8M)"
fi
}

# memory for one 1 MiB WRITE at a time and a 2 s record
# timeout.  A WRITE that waits for memory behind a client that stalls
# holding it must be answered once that client is reset: waiting for
# memory is not the client's slowness (before, both were reset).
section_siege_memory_wait() {
siege_setup || return
read -r NFS_PORT MOUNT_PORT < <(free_ports)
echo "=== start server (--max-memory 2M --slots 1 --record-timeout 2) on ports $NFS_PORT/$MOUNT_PORT"
start_server "$TMP/server5c.log" --export "$RELX" --max-memory 2M --slots 1 --record-timeout 2
if wait_ready; then
	pass "start server (--max-memory 2M --record-timeout 2)"
	step "a WRITE waiting for memory outlives --record-timeout; the stalled holder is reset" 120 \
		"$SIEGE" memwait "$(url "$RELX" big.bin)" 127.0.0.5
	stop_server_term || fail "SIGTERM stops the --max-memory 2M server with status 0"
else
	fail "start server (--max-memory 2M --record-timeout 2)"
fi
}

# a --max-memory below one connection and one largest request is refused
# at start, saying what would do.
section_siege_memory_floor() {
siege_setup || return
echo "=== a --max-memory below one connection and one largest request is refused at start"
read -r NFS_PORT MOUNT_PORT < <(free_ports)
start_server "$TMP/server5c.log" --export "$RELX" --max-memory 2M
if wait "$SERVER_PID"; then
	fail "--max-memory 2M refused at start" "the server ran"
elif grep -q 'give at least 3 MiB' "$SERVER_LOG"; then
	pass "--max-memory 2M refused at start, saying what would do"
else
	fail "--max-memory 2M refused at start, saying what would do" "$(tail -n 3 "$SERVER_LOG")"
fi
}

# ---------------------------------------------------------------------------
# server 7: --metrics.  The Prometheus endpoint parsed by Debian's
# python3-prometheus-client (metrics_check.py): every family there with its
# type; counters rise under a libnfs workload and none goes down; silent
# scrapers holding every place make a scrape fail until the server resets
# them, then scrapes work again.
# (ctest: nfs_integration_MODEL_metrics; the body is not indented)
section_metrics() {
read -r NFS_PORT MOUNT_PORT < <(free_ports)
read -r METRICS_PORT _ < <(free_ports)
METRICS_DIR=$TMP/metrics
mkdir -p "$METRICS_DIR"
head -c 300000 /dev/urandom >"$METRICS_DIR/data.bin"
echo "=== start server (--metrics 127.0.0.1:$METRICS_PORT) on ports $NFS_PORT/$MOUNT_PORT"
start_server "$TMP/server7.log" --export "$METRICS_DIR" --metrics "127.0.0.1:$METRICS_PORT"
if wait_ready; then
	pass "start server (--metrics)"
	MURL="http://127.0.0.1:$METRICS_PORT/metrics"
	step "metrics: scrape and parse (prometheus_client)" 60 \
		/usr/bin/python3 "$HERE/metrics_check.py" scrape "$MURL" "$TMP/metrics.before"
	for i in 1 2 3; do
		timeout 60 nfs-cat "$(url "$METRICS_DIR" data.bin)" >/dev/null 2>&1
	done
	step "metrics: scrape after 3 reads of 300000 bytes" 60 \
		/usr/bin/python3 "$HERE/metrics_check.py" scrape "$MURL" "$TMP/metrics.after"
	step "metrics: the counters rose with the workload" 60 \
		/usr/bin/python3 "$HERE/metrics_check.py" rose "$TMP/metrics.before" "$TMP/metrics.after" 900000
	NFSSTAT=$(dirname "$SERVER")/kcont-nfsstat
	echo "=== kcont-nfsstat 127.0.0.1:$METRICS_PORT"
	if out=$(timeout 30 "$NFSSTAT" "127.0.0.1:$METRICS_PORT" 2>&1) &&
		echo "$out" | grep -E '^READ +[0-9]+' | awk '{exit !($2 >= 3)}' &&
		echo "$out" | grep -q '^connections: '; then
		echo "$out" | grep -E '^(READ|MNT|data|connections|memory)' | sed 's/^/    | /'
		pass "kcont-nfsstat prints the running server's counters"
	else
		quote_block <<<"$out"
		fail "kcont-nfsstat prints the running server's counters"
	fi
	step "metrics: 4 silent scrapers are reset; scrapes work again" 120 \
		/usr/bin/python3 "$HERE/metrics_check.py" hostile 127.0.0.1 "$METRICS_PORT" 4
	if stop_server_term; then
		pass "SIGTERM stops the --metrics server with status 0"
	else
		fail "SIGTERM stops the --metrics server with status 0"
	fi
else
	fail "start server (--metrics)"
fi
}

# server 8: a full MOUNT table flooded from one address; an idle client
# of another address keeps its connection (evict_check.py).
# (ctest: nfs_integration_MODEL_metrics_flood; the body is not indented)
section_metrics_flood() {
METRICS_DIR=$TMP/metrics
mkdir -p "$METRICS_DIR"
read -r NFS_PORT MOUNT_PORT < <(free_ports)
read -r METRICS_PORT _ < <(free_ports)
echo "=== start server (--max-mount-conns 4 --max-conns-per-addr 16) on ports $NFS_PORT/$MOUNT_PORT"
start_server "$TMP/server8.log" --export "$METRICS_DIR" --max-mount-conns 4 \
	--max-conns-per-addr 16 --record-timeout 2 --metrics "127.0.0.1:$METRICS_PORT"
if wait_ready; then
	step "a flood from one address evicts its own idle connections, not a client's" 120 \
		/usr/bin/python3 "$HERE/evict_check.py" 127.0.0.1 "$MOUNT_PORT" \
		"http://127.0.0.1:$METRICS_PORT/metrics" 12
	if stop_server_term; then
		pass "SIGTERM stops the flooded server with status 0"
	else
		fail "SIGTERM stops the flooded server with status 0"
	fi
else
	fail "start server (--max-mount-conns 4)"
fi
}

# ---------------------------------------------------------------------------
# server 6: a file system that stops answering (hangfs.c over FUSE) under
# one export, a plain directory under another.  Twelve clients hang in the
# FUSE export; under the kcont model they may hold only that export's share
# of the VFS's thread context, so the other export still answers.  SIGTERM
# then ends the server within --grace, abandoning the hung requests.
# (ctest: nfs_integration_MODEL_hung; the body is not indented)
section_hung() {

# hung_in_pause PID: the FUSE daemon sits in pause(2), i.e. it took a
# request and will never answer (syscall 34 on x86-64, 29 on arm64).
hung_in_pause() {
	case $(cut -d' ' -f1 "/proc/$1/syscall" 2>/dev/null) in
	34 | 29) return 0 ;;
	*) return 1 ;;
	esac
}

if [ -n "$HANGFS" ] && [ -c /dev/fuse ] && command -v fusermount3 >/dev/null 2>&1; then
	FUSE_DIR=$TMP/fuse
	BYSTANDER=$TMP/bystander
	FLAG=$TMP/hang.flag
	CLIENTS=()
	mkdir -p "$FUSE_DIR" "$BYSTANDER"
	printf 'an export on a disk that answers\n' >"$BYSTANDER/b.txt"
	echo "=== mount the FUSE file system that can hang"
	"$HANGFS" "$FLAG" "$FUSE_DIR" -f -s >"$TMP/hangfs.log" 2>&1 &
	HANGFS_PID=$!
	ALL_PIDS=("$HANGFS_PID" "${ALL_PIDS[@]}")
	FUSE_MOUNT=$FUSE_DIR
	for ((i = 0; i < 100; i++)); do
		grep -q " $FUSE_DIR fuse" /proc/mounts && break
		kill -0 "$HANGFS_PID" 2>/dev/null || break
		sleep 0.1
	done
	if grep -q " $FUSE_DIR fuse" /proc/mounts; then
		pass "mount the FUSE file system that can hang"
		printf '%s *(rw)\n%s *(rw)\n' "$FUSE_DIR" "$BYSTANDER" >"$TMP/exports.hang"
		read -r NFS_PORT MOUNT_PORT < <(free_ports)
		echo "=== start server (a FUSE export and a plain one, --grace 2) on ports $NFS_PORT/$MOUNT_PORT"
		start_server "$TMP/server6.log" --exports "$TMP/exports.hang" --grace 2
		if wait_ready; then
			pass "start server (a FUSE export and a plain one)"
			step "the FUSE export answers while its daemon does" 30 \
				nfs-cat "$(url "$FUSE_DIR" hello)"
			touch "$FLAG"
			for ((i = 0; i < 12; i++)); do
				timeout 300 nfs-cat "$(url "$FUSE_DIR" hello)" >/dev/null 2>&1 &
				CLIENTS+=("$!")
			done
			ALL_PIDS+=("${CLIENTS[@]}")
			# the event: the daemon hung and, under kcont, the export's
			# share of thread context is full with requests waiting
			echo "=== 12 clients hang in the FUSE export"
			share_full=""
			line=""
			for ((i = 0; i < 600; i++)); do
				kill -USR1 "$SERVER_PID" 2>/dev/null
				sleep 0.1
				hung_in_pause "$HANGFS_PID" || continue
				line=$(grep "export $FUSE_DIR: thread context" "$SERVER_LOG" | tail -n 1)
				if [ "$MODEL" != kcont ]; then
					share_full=yes
					break
				fi
				if [[ $line =~ thread\ context\ ([0-9]+)\ of\ ([0-9]+),\ ([0-9]+)\ waiting ]] &&
					[ "${BASH_REMATCH[1]}" = "${BASH_REMATCH[2]}" ] &&
					[ "${BASH_REMATCH[3]}" -gt 0 ]; then
					share_full=yes
					break
				fi
			done
			[ -n "$line" ] && echo "    ${line#*export }"
			if [ -n "$share_full" ]; then
				pass "12 clients hang in the FUSE export"
			else
				fail "12 clients hang in the FUSE export" \
					"the daemon never hung or the export's share never filled"
			fi
			if [ "$MODEL" = kcont ]; then
				# the threads model caps nothing per export (the classic
				# baseline): its workers all end up in the hung file system
				step "the other export answers while one hangs" 30 \
					nfs-cat "$(url "$BYSTANDER" b.txt)"
				# MNT of the hung export's root needs no thread (vfs(9):
				# a walk that stays where it starts): it answers MNT3_OK.
				# (The threads model's workers are all in the hung file
				# system by now.)
				step "MNT of the hung export's root answers" 30 python3 -c '
import socket, struct, sys
def opaque(b): return struct.pack(">I", len(b)) + b + b"\0" * (-len(b) % 4)
cred = struct.pack(">I", 0) + opaque(b"it") + struct.pack(">III", 0, 0, 0)
call = struct.pack(">IIIIII", 77, 0, 2, 100005, 3, 1) + struct.pack(">I", 1) + opaque(cred) + \
    struct.pack(">II", 0, 0) + opaque(sys.argv[2].encode())
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=25)
s.sendall(struct.pack(">I", 0x80000000 | len(call)) + call)
rep = b""
while len(rep) < 32:
    chunk = s.recv(4096)
    if not chunk: sys.exit("connection closed")
    rep += chunk
xid, mtype, stat, vf, vl, acc, mnt = struct.unpack(">IIIIIII", rep[4:32])
sys.exit(0 if (xid, mtype, stat, acc, mnt) == (77, 1, 0, 0, 0) else "MNT answered %d" % mnt)' \
					"$MOUNT_PORT" "$FUSE_DIR"
			fi
			# A thread inside a FUSE request the daemon has taken sleeps
			# uninterruptibly (fs/fuse/dev.c: "wait it out"), so no signal
			# ends the process while the daemon lives.  What the server
			# owes: stop serving within --grace, give its ports back, log
			# what was cut short and _exit(0); the kernel releases the
			# process when the daemon dies.
			echo "=== SIGTERM ends the server within --grace although requests hang"
			kill -TERM "$SERVER_PID"
			for ((i = 0; i < 100; i++)); do
				kill -0 "$SERVER_PID" 2>/dev/null || break
				if grep -q "cut short" "$SERVER_LOG" &&
					[ "$(awk '/^State:/ {print $2}' "/proc/$SERVER_PID/status" 2>/dev/null)" = Z ]; then
					break
				fi
				sleep 0.1
			done
			grep "cut short" "$SERVER_LOG" | tail -n 1 | sed 's/^/    | /'
			if ! grep -q "cut short" "$SERVER_LOG"; then
				fail "SIGTERM ends the server within --grace although requests hang" \
					"no 'cut short' in the log after 10 s"
			elif kill -0 "$SERVER_PID" 2>/dev/null &&
				[ "$(awk '/^State:/ {print $2}' "/proc/$SERVER_PID/status" 2>/dev/null)" != Z ]; then
				fail "SIGTERM ends the server within --grace although requests hang" \
					"the server's main thread is still running 10 s after SIGTERM"
			elif ! python3 -c '
import socket, sys
for p in sys.argv[1:]:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(p))); s.close()' "$NFS_PORT" "$MOUNT_PORT"; then
				fail "SIGTERM ends the server within --grace although requests hang" \
					"its ports are still bound"
			else
				kill -9 "$HANGFS_PID" 2>/dev/null
				wait "$HANGFS_PID" 2>/dev/null
				wait "$SERVER_PID"
				rc=$?
				if [ "$rc" -eq 0 ]; then
					pass "SIGTERM ends the server within --grace although requests hang"
				else
					fail "SIGTERM ends the server within --grace although requests hang" \
						"exit status $rc"
				fi
			fi
		else
			fail "start server (a FUSE export and a plain one)"
		fi
	else
		sed 's/^/    | /' "$TMP/hangfs.log"
		fail "mount the FUSE file system that can hang"
	fi
	# the daemon's death fails every request still hung in it
	kill -9 "$HANGFS_PID" 2>/dev/null
	wait "$HANGFS_PID" 2>/dev/null
	fusermount3 -u -z "$FUSE_DIR" 2>/dev/null
	FUSE_MOUNT=""
	for p in "${CLIENTS[@]}"; do
		pkill -9 -P "$p" 2>/dev/null # the nfs-cat under each timeout
		kill -9 "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
else
	not_tested "the hung-file-system steps (no hangfs binary, /dev/fuse or fusermount3)"
fi
}

# The selection, in order.  Run in one process, a fixture whose start
# failed skips its other cases (its stop still cleans up).
BROKEN_FIXTURE=""
for sel in "${SELECTED[@]}"; do
	case $sel in
	*.*)
		fixture=${sel%%.*}
		case_name=${sel#*.}
		if [ "$fixture" = "$BROKEN_FIXTURE" ] && [ "$case_name" != stop ]; then
			echo "=== $sel: skipped, its fixture did not start"
			continue
		fi
		failed_before=$FAILED
		run_case "$fixture" "$case_name"
		if [ "$case_name" = start ] && [ "$FAILED" -ne "$failed_before" ]; then
			BROKEN_FIXTURE=$fixture
		fi
		;;
	*) "section_$sel" ;;
	esac
done
finish
