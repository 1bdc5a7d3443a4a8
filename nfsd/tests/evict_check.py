#!/usr/bin/python3
# SPDX-License-Identifier: BSD-2-Clause
"""evict_check.py HOST MOUNT_PORT METRICS_URL N -- a flood from one address
evicts its own idle connections, not a client's (nfs_integration.sh).

A victim connects to the MOUNT port from 127.0.0.1 and sends nothing (idle,
like a client between connect and its first request).  Then N connections
from 127.0.0.2 fill the server's MOUNT table over and over.  Once the
server's counters (--metrics) show it has dealt with all of them, the
victim sends a MOUNT NULL call and must get its reply: the server evicted
the flood's own connections (it holds the most), not the victim's, though
the victim's was the longest idle.  Exit 0, or 1 saying what failed.
"""
import socket
import struct
import sys
import time
import urllib.request


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def counters(url):
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    total = 0
    for line in text.splitlines():
        if line.startswith("kcont_nfsd_connections_accepted_total ") or line.startswith(
                "kcont_nfsd_connections_refused_total{"):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def main():
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    host, port, url, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    start = counters(url)
    victim = socket.socket()
    victim.bind(("127.0.0.1", 0))
    victim.connect((host, port))
    # Let the victim's connection become the longest idle: the kcont model
    # ages connections by its sweep (a quarter of --record-timeout 2 s).
    # Not a timing assertion: a late sweep only makes the check weaker.
    time.sleep(1.5)
    flood = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        s.connect((host, port))
        flood.append(s)
    t0 = time.time()
    while counters(url) < start + 1 + n:  # the server has taken or refused each
        if time.time() - t0 > 60:
            fail("the server did not deal with %d connections in 60 s" % (n + 1))
        time.sleep(0.05)
    # MOUNT v3 NULL: xid, CALL, rpcvers 2, prog 100005, vers 3, proc 0,
    # AUTH_NONE credential and verifier.
    call = struct.pack(">IIIIIIIIII", 0x4b430001, 0, 2, 100005, 3, 0, 0, 0, 0, 0)
    victim.settimeout(10)
    try:
        victim.sendall(struct.pack(">I", 0x80000000 | len(call)) + call)
        reply = victim.recv(64)
    except OSError as e:
        fail("the victim's connection was closed: %s" % e)
    if len(reply) < 28 or struct.unpack(">I", reply[4:8])[0] != 0x4b430001:
        fail("the victim got no reply (%d bytes): its connection was evicted" % len(reply))
    print("ok: after %d flood connections from 127.0.0.2 the idle victim still gets its reply"
          % n)
    for s in flood:
        s.close()
    victim.close()


if __name__ == "__main__":
    main()
