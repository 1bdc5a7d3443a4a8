#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
# make_corpus.py -- writes the seed inputs of fuzz_rpc (nfsd/fuzz/corpus/).
#
# Each seed is a TCP byte stream: one or more ONC RPC call records with
# record marks.  File handles and export paths are written as the
# placeholders fuzz_rpc.cc expands (the XDR opaque 00000004 'F' 'H' k 00 is
# the handle of object k, 00000004 'P' 'A' k 00 the path of object k; see
# HANDLES and PATHS there).  Run: python3 nfsd/fuzz/make_corpus.py
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
NFS, MOUNT = 100003, 100005
ROOT, FILE, DIR, LINK, ESCAPE, RO_ROOT, RO_FILE, INNER, MEM_ROOT, MEM_FILE, MEM_DIR = range(11)
MEM_PATH = 5  # path(5): the in-memory export


def u32(v): return struct.pack(">I", v & 0xffffffff)
def u64(v): return struct.pack(">Q", v)
def opaque(b): return u32(len(b)) + b + b"\0" * (-len(b) % 4)
def s(text): return opaque(text.encode())
def fh(k): return u32(4) + b"FH" + bytes([k, 0])
def path(k): return u32(4) + b"PA" + bytes([k, 0])
def no_sattr(): return u32(0) * 6
def mode_sattr(m): return u32(1) + u32(m) + u32(0) * 5


def auth_sys(uid=0, gid=0, gids=()):
    body = u32(1) + s("fuzz") + u32(uid) + u32(gid) + u32(len(gids)) + b"".join(map(u32, gids))
    return u32(1) + opaque(body)


def call(xid, prog, vers, proc, args=b"", cred=None, rpcvers=2):
    cred = auth_sys() if cred is None else cred
    return u32(xid) + u32(0) + u32(rpcvers) + u32(prog) + u32(vers) + u32(proc) + cred + \
        u32(0) + u32(0) + args


def record(body, frags=1):
    """Record-marks body, cut into `frags` fragments."""
    out, n = b"", len(body)
    cuts = [n * i // frags for i in range(frags + 1)]
    for i in range(frags):
        part = body[cuts[i]:cuts[i + 1]]
        out += u32(len(part) | (0x80000000 if i == frags - 1 else 0)) + part
    return out


seeds = {
    "nfs_null": record(call(1, NFS, 3, 0)),
    "nfs_null_auth_none": record(call(2, NFS, 3, 0, cred=u32(0) + u32(0))),
    "mount_null": record(call(3, MOUNT, 3, 0)),
    "mount_mnt": record(call(4, MOUNT, 3, 1, path(0))),
    "mount_mnt_ro": record(call(5, MOUNT, 3, 1, path(1)), 2),
    "mount_mnt_sub": record(call(6, MOUNT, 3, 1, path(2))),
    "mount_mnt_symlink": record(call(7, MOUNT, 3, 1, path(4))),
    "mount_dump_export": record(call(8, MOUNT, 3, 2)) + record(call(9, MOUNT, 3, 5)),
    "mount_umnt": record(call(10, MOUNT, 3, 3, path(0))) + record(call(11, MOUNT, 3, 4)),
    "getattr": record(call(20, NFS, 3, 1, fh(ROOT))),
    "getattr_ro_squashed": record(call(21, NFS, 3, 1, fh(RO_FILE), auth_sys(0, 0, [0, 10]))),
    "setattr": record(call(22, NFS, 3, 2, fh(FILE) + mode_sattr(0o600) + u32(0))),
    "setattr_size_times": record(call(23, NFS, 3, 2, fh(FILE) + u32(0) * 3 + u32(1) + u64(4) +
                                      u32(2) + u32(5) + u32(0) + u32(1) + u32(0))),
    "lookup": record(call(24, NFS, 3, 3, fh(ROOT) + s("file"))),
    "lookup_dotdot": record(call(25, NFS, 3, 3, fh(DIR) + s(".."))),
    "access": record(call(26, NFS, 3, 4, fh(FILE) + u32(0x3f), auth_sys(1000, 1000))),
    "readlink": record(call(27, NFS, 3, 5, fh(LINK))),
    "read": record(call(28, NFS, 3, 6, fh(FILE) + u64(0) + u32(4096))),
    "read_big": record(call(29, NFS, 3, 6, fh(INNER) + u64(0) + u32(200000))),
    "write": record(call(30, NFS, 3, 7, fh(FILE) + u64(3) + u32(5) + u32(0) + s("hello")), 3),
    "create": record(call(31, NFS, 3, 8, fh(ROOT) + s("new") + u32(0) + mode_sattr(0o644))),
    "create_exclusive": record(call(32, NFS, 3, 8, fh(DIR) + s("excl") + u32(2) + b"verifier")),
    "mkdir": record(call(33, NFS, 3, 9, fh(ROOT) + s("newdir") + no_sattr())),
    "symlink": record(call(34, NFS, 3, 10, fh(ROOT) + s("sl") + no_sattr() + s("../x"))),
    "mknod_fifo": record(call(35, NFS, 3, 11, fh(DIR) + s("fifo") + u32(7) + no_sattr())),
    "remove": record(call(36, NFS, 3, 12, fh(DIR) + s("inner"))),
    "rmdir": record(call(37, NFS, 3, 13, fh(ROOT) + s("dir"))),
    "rename": record(call(38, NFS, 3, 14, fh(ROOT) + s("file") + fh(DIR) + s("moved"))),
    "link": record(call(39, NFS, 3, 15, fh(FILE) + fh(DIR) + s("hard"))),
    "readdir": record(call(40, NFS, 3, 16, fh(ROOT) + u64(0) + u64(0) + u32(512))),
    "readdirplus": record(call(41, NFS, 3, 17, fh(ROOT) + u64(0) + u64(0) + u32(512) +
                               u32(4096))),
    "fsstat_fsinfo_pathconf": record(call(42, NFS, 3, 18, fh(ROOT))) +
    record(call(43, NFS, 3, 19, fh(ROOT))) + record(call(44, NFS, 3, 20, fh(FILE))),
    "commit": record(call(45, NFS, 3, 21, fh(FILE) + u64(0) + u32(0))),
    "write_then_read": record(call(46, NFS, 3, 7, fh(INNER) + u64(0) + u32(3) + u32(2) +
                                   s("abc"))) +
    record(call(47, NFS, 3, 6, fh(INNER) + u64(0) + u32(3))),
    "rpc_errors": record(call(50, NFS, 2, 0)) + record(call(51, 100000, 2, 0)) +
    record(call(52, NFS, 3, 22)) + record(call(53, NFS, 3, 0, rpcvers=3)) +
    record(call(54, NFS, 3, 0, cred=u32(6) + opaque(b"gss!"))),
    "reply_message": record(u32(60) + u32(1) + u32(0) + u32(0) + u32(0) + u32(0)) +
    record(call(61, NFS, 3, 0)),
    # The in-memory export (vfs(9) memory backend): the same procedures on a
    # second implementation of the file system.
    "mem_mnt_create_write_read": record(call(70, MOUNT, 3, 1, path(MEM_PATH))) +
    record(call(71, NFS, 3, 8, fh(MEM_ROOT) + s("f") + u32(0) + mode_sattr(0o644))) +
    record(call(72, NFS, 3, 3, fh(MEM_ROOT) + s("f"))) +
    record(call(73, NFS, 3, 9, fh(MEM_ROOT) + s("d") + no_sattr())) +
    record(call(74, NFS, 3, 17, fh(MEM_ROOT) + u64(0) + u64(0) + u32(512) + u32(4096))),
    "mem_symlink_mknod_rename": record(call(75, NFS, 3, 10, fh(MEM_ROOT) + s("sl") + no_sattr() +
                                             s("f"))) +
    record(call(76, NFS, 3, 11, fh(MEM_ROOT) + s("p") + u32(7) + no_sattr())) +
    record(call(77, NFS, 3, 14, fh(MEM_ROOT) + s("sl") + fh(MEM_ROOT) + s("sl2"))) +
    record(call(78, NFS, 3, 13, fh(MEM_ROOT) + s("d"))),
    "mem_fsstat_access": record(call(79, NFS, 3, 18, fh(MEM_ROOT))) +
    record(call(80, NFS, 3, 4, fh(MEM_ROOT) + u32(0x3f), auth_sys(1000, 1000))),
    "empty_fragments": u32(0) + u32(0) + record(call(62, NFS, 3, 0), 4),
    # Every procedure on the memory export's file (200,000 bytes) and
    # directory: through the kcont transport these reach the memory
    # backend's start without a thread, and READs over the 64 KiB reply
    # buffer.
    "mem_read_write": record(call(90, NFS, 3, 6, fh(MEM_FILE) + u64(0) + u32(150000))) +
    record(call(91, NFS, 3, 6, fh(MEM_FILE) + u64(1000) + u32(4096))) +
    record(call(92, NFS, 3, 7, fh(MEM_FILE) + u64(7) + u32(5) + u32(0) + s("hello")), 2) +
    record(call(93, NFS, 3, 7, fh(MEM_FILE) + u64(9) + u32(3) + u32(2) + s("abc"))) +
    record(call(94, NFS, 3, 21, fh(MEM_FILE) + u64(0) + u32(0))) +
    record(call(95, NFS, 3, 6, fh(MEM_FILE) + u64(199990) + u32(100))),
    "mem_attrs": record(call(96, NFS, 3, 1, fh(MEM_FILE))) +
    record(call(97, NFS, 3, 2, fh(MEM_FILE) + mode_sattr(0o640) + u32(0))) +
    record(call(98, NFS, 3, 2, fh(MEM_FILE) + u32(0) * 3 + u32(1) + u64(180000) + u32(1) +
                u32(1) + u32(0))) +
    record(call(99, NFS, 3, 4, fh(MEM_FILE) + u32(0x3f), auth_sys(1000, 1000))) +
    record(call(100, NFS, 3, 5, fh(MEM_FILE))) +
    record(call(101, NFS, 3, 19, fh(MEM_FILE))) + record(call(102, NFS, 3, 20, fh(MEM_FILE))),
    "mem_names": record(call(103, NFS, 3, 3, fh(MEM_ROOT) + s("file"))) +
    record(call(104, NFS, 3, 8, fh(MEM_DIR) + s("g") + u32(1) + mode_sattr(0o600))) +
    record(call(105, NFS, 3, 8, fh(MEM_DIR) + s("x") + u32(2) + b"verifier")) +
    record(call(106, NFS, 3, 9, fh(MEM_DIR) + s("sub") + mode_sattr(0o2775))) +
    record(call(107, NFS, 3, 10, fh(MEM_DIR) + s("sl") + no_sattr() + s("../file"))) +
    record(call(108, NFS, 3, 11, fh(MEM_DIR) + s("chr") + u32(3) + no_sattr() + u32(1) + u32(3))) +
    record(call(109, NFS, 3, 15, fh(MEM_FILE) + fh(MEM_DIR) + s("hard"))) +
    record(call(110, NFS, 3, 14, fh(MEM_DIR) + s("g") + fh(MEM_ROOT) + s("g2"))) +
    record(call(111, NFS, 3, 16, fh(MEM_DIR) + u64(0) + u64(0) + u32(512))) +
    record(call(112, NFS, 3, 17, fh(MEM_DIR) + u64(0) + u64(0) + u32(512) + u32(8192))) +
    record(call(113, NFS, 3, 12, fh(MEM_DIR) + s("hard"))) +
    record(call(114, NFS, 3, 13, fh(MEM_DIR) + s("sub"))),
}

os.makedirs(OUT, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(f"wrote {len(seeds)} seeds to {OUT}")
