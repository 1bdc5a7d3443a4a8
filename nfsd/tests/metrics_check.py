#!/usr/bin/python3
# SPDX-License-Identifier: BSD-2-Clause
"""metrics_check.py -- checks kcont-nfsd's --metrics endpoint with Debian's
python3-prometheus-client text parser (nfs_integration.sh runs it).

  metrics_check.py scrape URL OUT       scrape, parse, check the families; save
  metrics_check.py rose BEFORE AFTER N  counters rose under a workload that read
                                        N bytes; no counter went down
  metrics_check.py hostile HOST PORT K  K silent connections take every scraper
                                        place: a scrape is refused; the server
                                        resets them and scrapes work again

Exit status 0 when the check holds; otherwise it says what failed.  Waits
are for events (a scrape that works), bounded only against a hang.
"""
import socket
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

REQUIRED = {
    "kcont_nfsd_calls": "counter",
    "kcont_nfsd_call_errors": "counter",
    "kcont_nfsd_calls_without_thread": "counter",
    "kcont_nfsd_call_duration_seconds": "histogram",
    "kcont_nfsd_nfs_errors": "counter",
    "kcont_nfsd_read_bytes": "counter",
    "kcont_nfsd_written_bytes": "counter",
    "kcont_nfsd_connections": "gauge",
    "kcont_nfsd_connections_accepted": "counter",
    "kcont_nfsd_connections_refused": "counter",
    "kcont_nfsd_buffer_memory_bytes": "gauge",
    "kcont_vfs_handle_cache_hits": "counter",
    "kcont_vfs_attributes_shared": "counter",
    "kcont_vfs_attributes_read": "counter",
    "kcont_run": "counter",
    "kcont_dispatch_latency_seconds": "histogram",
    "kcont_dispatcher_loops": "counter",
}


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def scrape(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        ctype = r.headers.get("Content-Type", "")
        if r.status != 200 or not ctype.startswith("text/plain; version=0.0.4"):
            fail("%s: status %d, Content-Type %r" % (url, r.status, ctype))
        return r.read().decode()


def samples(text):
    """{(name, sorted labels): value} and {family: type}."""
    values, types = {}, {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return values, types


def value(vals, name, **labels):
    return vals.get((name, tuple(sorted(labels.items()))), 0.0)


def cmd_scrape(url, out):
    text = scrape(url)
    vals, types = samples(text)
    for fam, typ in REQUIRED.items():
        if types.get(fam) != typ:
            fail("family %s: type %r, want %r" % (fam, types.get(fam), typ))
    # Each histogram's +Inf bucket equals its count.
    for (name, labels), v in vals.items():
        if name.endswith("_count"):
            base = name[: -len("_count")]
            inf = vals.get((base + "_bucket", tuple(sorted(labels + (("le", "+Inf"),)))))
            if inf is not None and inf != v:
                fail("%s%s: +Inf bucket %s, count %s" % (base, dict(labels), inf, v))
    with open(out, "w") as f:
        f.write(text)
    print("ok: %d families, %d samples, %d bytes" % (len(types), len(vals), len(text)))


def cmd_rose(before, after, nbytes):
    b, _ = samples(open(before).read())
    a, _ = samples(open(after).read())
    for key, v in b.items():
        if key[0].endswith("_total") and a.get(key, 0.0) < v:
            fail("%s%s went down: %s -> %s" % (key[0], dict(key[1]), v, a.get(key)))
    checks = [
        ("READ calls", "kcont_nfsd_calls_total", {"program": "nfs", "procedure": "READ"}, 1),
        ("MNT calls", "kcont_nfsd_calls_total", {"program": "mount", "procedure": "MNT"}, 1),
        ("READ latency samples", "kcont_nfsd_call_duration_seconds_count",
         {"program": "nfs", "procedure": "READ"}, 1),
        ("bytes read", "kcont_nfsd_read_bytes_total", {}, nbytes),
        ("connections accepted", "kcont_nfsd_connections_accepted_total", {}, 1),
    ]
    for what, name, labels, least in checks:
        d = value(a, name, **labels) - value(b, name, **labels)
        if d < least:
            fail("%s rose by %s, want at least %s" % (what, d, least))
        print("ok: %s +%d" % (what, d))
    def rise(*names):  # summed over every label set
        return sum(v for (n, _), v in a.items() if n in names) - sum(
            v for (n, _), v in b.items() if n in names)
    runs = rise("kcont_run_total")
    if runs <= 0:
        fail("kcont_run_total did not rise")
    print("ok: kcont_run_total +%d" % runs)
    # Every READ takes its object's attributes: shared or read itself.
    attrs = rise("kcont_vfs_attributes_shared_total", "kcont_vfs_attributes_read_total")
    if attrs < 1:
        fail("kcont_vfs_attributes_{shared,read}_total did not rise")
    print("ok: attributes shared or read +%d" % attrs)


def cmd_hostile(host, port, k):
    url = "http://%s:%d/metrics" % (host, port)
    held = []
    for _ in range(k):
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(b"GET /metr")  # a request that never ends
        held.append(s)
    # The server accepts in connection order: the held ones take the places
    # before this scrape's connection is looked at.
    try:
        scrape(url, timeout=3)
        refused = False
    except Exception:
        refused = True
    if not refused:
        fail("a scrape got through while %d silent scrapers held every place" % k)
    print("ok: with %d silent scrapers a new scrape is refused" % k)
    t0 = time.time()
    while True:
        try:
            scrape(url, timeout=3)
            break
        except Exception:
            if time.time() - t0 > 60:
                fail("scrapes still refused 60 s later: silent scrapers never reset")
            time.sleep(0.2)
    reset = 0
    for s in held:
        try:
            s.settimeout(5)
            if s.recv(1) == b"":
                reset += 1
        except OSError:
            reset += 1
        s.close()
    if reset != k:
        fail("only %d of %d silent scrapers were closed by the server" % (reset, k))
    print("ok: the server reset them and served again after %.1f s" % (time.time() - t0))


def main():
    a = sys.argv[1:]
    if len(a) == 3 and a[0] == "scrape":
        cmd_scrape(a[1], a[2])
    elif len(a) == 4 and a[0] == "rose":
        cmd_rose(a[1], a[2], int(a[3]))
    elif len(a) == 4 and a[0] == "hostile":
        cmd_hostile(a[1], int(a[2]), int(a[3]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
