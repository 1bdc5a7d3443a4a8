// SPDX-License-Identifier: BSD-2-Clause
// exports.cc -- the exports table: parsing exports(5)-style text, opening
// the roots, and matching clients.
//
// Format: one export per line, `PATH [fs=NAME,OPT=VALUE,...] CLIENT(OPTIONS)
// CLIENT(OPTIONS) ...`; `#` to end of line is a comment.  A plain PATH is a
// local directory; with a back-end word PATH is the export's name and the
// VFS back end NAME mounts what its options say (vfs_mount).  A client is
// `*`, an IPv4 or IPv6 address, or an address with a /prefix; options are
// rw, ro, root_squash, no_root_squash, all_squash, no_all_squash,
// anonuid=N, anongid=N (others are an error, so a typo never silently
// weakens an export).  The first
// matching client entry applies.  An export's identity (the id in its file
// handles) is a hash of its canonical path (its name), so handles survive
// restarts and reloads as long as the path is exported.
//
// Locking: a table is immutable once built; the server swaps whole tables.
#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

#include "internal.h"
#include "kcont/error_text.h"

namespace kc::nfs {

export_table::~export_table() = default;  // each entry's mount goes with its last table

// Takes ownership of a fresh mount.
static void own_mount(export_entry *e, vfs::mount *fs) {
  e->fs = fs;
  e->mount = std::shared_ptr<vfs::mount>(fs, [](vfs::mount *m) {
    if (m) vfs::vfs_unmount(m);
  });
}

const export_entry *export_table::by_id(uint32_t id) const {
  for (auto &e : exports)
    if (e.id == id) return &e;
  return nullptr;
}

namespace {

uint32_t path_id(const std::string &p) {
  uint32_t h = 2166136261u;  // FNV-1a, 32 bits
  for (unsigned char ch : p) h = (h ^ ch) * 16777619u;
  return h ? h : 1;
}

bool parse_uint(const std::string &s, uint32_t *out) {
  if (s.empty()) return false;
  char *end = nullptr;
  errno = 0;
  unsigned long v = std::strtoul(s.c_str(), &end, 10);
  if (errno || *end || v > UINT32_MAX) return false;
  *out = uint32_t(v);
  return true;
}

bool parse_client(const std::string &spec, export_client *c, std::string *why) {
  c->spec = spec;
  if (spec == "*") {
    c->any = true;
    return true;
  }
  std::string addr = spec;
  int prefix = -1;
  if (auto slash = spec.find('/'); slash != std::string::npos) {
    addr = spec.substr(0, slash);
    uint32_t p;
    if (!parse_uint(spec.substr(slash + 1), &p)) {
      *why = "bad prefix length in '" + spec + "'";
      return false;
    }
    prefix = int(p);
  }
  if (inet_pton(AF_INET, addr.c_str(), c->addr) == 1) {
    c->v6 = false;
    c->prefix = prefix < 0 ? 32 : prefix;
    if (c->prefix > 32) {
      *why = "prefix longer than 32 in '" + spec + "'";
      return false;
    }
  } else if (inet_pton(AF_INET6, addr.c_str(), c->addr) == 1) {
    c->v6 = true;
    c->prefix = prefix < 0 ? 128 : prefix;
    if (c->prefix > 128) {
      *why = "prefix longer than 128 in '" + spec + "'";
      return false;
    }
  } else {
    *why = "'" + addr +
           "' is not an address (use *, an IP or IP/prefix; host names are not "
           "resolved)";
    return false;
  }
  return true;
}

bool parse_options(const std::string &opts, export_opts *o, std::string *why) {
  std::stringstream ss(opts);
  std::string opt;
  while (std::getline(ss, opt, ',')) {
    if (opt == "rw") {
      o->rw = true;
    } else if (opt == "ro") {
      o->rw = false;
    } else if (opt == "root_squash") {
      o->root_squash = true;
    } else if (opt == "no_root_squash") {
      o->root_squash = false;
    } else if (opt == "all_squash") {
      o->all_squash = true;
    } else if (opt == "no_all_squash") {
      o->all_squash = false;
    } else if (opt.rfind("anonuid=", 0) == 0) {
      if (!parse_uint(opt.substr(8), &o->anonuid)) {
        *why = "bad anonuid in '" + opt + "'";
        return false;
      }
    } else if (opt.rfind("anongid=", 0) == 0) {
      if (!parse_uint(opt.substr(8), &o->anongid)) {
        *why = "bad anongid in '" + opt + "'";
        return false;
      }
    } else if (opt == "sync" || opt == "async" || opt == "no_subtree_check" ||
               opt == "subtree_check" || opt == "secure" || opt == "insecure") {
      // Accepted for compatibility with Linux exports files; no effect here.
    } else if (!opt.empty()) {
      *why = "unknown option '" + opt + "'";
      return false;
    }
  }
  return true;
}

// Splits a back-end word `fs=NAME,OPT=VALUE,...` into NAME and options.
bool parse_backend(const std::string &word, std::string *fs, vfs::vfs_options *opts,
                   std::string *why) {
  std::stringstream ss(word);
  std::string item;
  fs->clear();
  for (bool first = true; std::getline(ss, item, ','); first = false) {
    auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      *why = "'";
      why->append(item).append("' in '").append(word).append("' is not NAME=VALUE");
      return false;
    }
    if (first)  // the caller saw "fs=" first
      *fs = item.substr(eq + 1);
    else
      opts->emplace_back(item.substr(0, eq), item.substr(eq + 1));
  }
  if (fs->empty()) {
    *why = "'" + word + "' names no back end";
    return false;
  }
  return true;
}

// Mounts the export (vfs(9)): a plain PATH is a local directory (the local
// back end, whose handles need open_by_handle_at and so
// CAP_DAC_READ_SEARCH); with a back-end word, PATH is the export's name and
// the back end mounts what its options say.  Then checks that the root's
// handle resolves.
bool open_root(export_entry *e, const std::string &path, const std::string &backend,
               std::string *why) {
  std::string fs = "local";
  vfs::vfs_options opts;
  if (backend.empty()) {
    char real[PATH_MAX];
    struct stat st;
    if (!realpath(path.c_str(), real) || stat(real, &st) != 0) {
      *why = "export " + path + ": " + kc::error_text(errno);
      return false;
    }
    if (!S_ISDIR(st.st_mode)) {
      *why = "export " + path + ": not a directory";
      return false;
    }
    e->path = real;
    e->backend = "local";
    opts.emplace_back("path", real);
  } else {
    if (path.find("/..") != std::string::npos || path.find("//") != std::string::npos ||
        (path.size() > 1 && path.back() == '/')) {
      *why = "export " + path +
             ": give the name as an absolute path without '..', '//' or a "
             "trailing '/'";
      return false;
    }
    if (!parse_backend(backend, &fs, &opts, why)) {
      *why = "export " + path + ": " + *why;
      return false;
    }
    e->path = path;
    e->backend = backend;
  }
  e->id = path_id(e->path);
  std::string err;
  own_mount(e, vfs::vfs_mount(fs, opts, &err));
  if (!e->fs) {
    *why = "export " + path + ": " + err;
    return false;
  }
  auto probe = std::make_unique<vfs::vreq>();
  probe->op = vfs::vop::getattr;
  probe->fs = e->fs;
  probe->fh = vfs::vfs_root(e->fs);
  probe->cred = vfs::vcred{0, 0, 0, {}};
  int rc = vfs::vop_call(probe.get());
  vfs::vfs_cred_reset();
  if (rc != 0) {
    bool local = fs == "local";
    *why =
        "export " + path + ": " + (local ? "open_by_handle_at" : "its root") + " failed (" +
        kc::error_text(rc) +
        (local && rc == EPERM ? "): kcont-nfsd needs CAP_DAC_READ_SEARCH -- run it as root" : ")");
    return false;
  }
  return true;
}

}  // namespace

std::shared_ptr<export_table> parse_exports(const std::string &text, const std::string &origin,
                                            std::string *err) {
  auto t = std::make_shared<export_table>();
  std::stringstream in(text);
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    lineno++;
    if (auto hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::stringstream words(line);
    std::string path, word;
    if (!(words >> path)) continue;
    std::string where = origin + ":" + std::to_string(lineno) + ": ";
    if (path[0] != '/') {
      *err = where.append("export path must be absolute: ").append(path);
      return nullptr;
    }
    std::vector<std::string> rest;
    while (words >> word) rest.push_back(word);
    // A back-end word (fs=...) may follow the path; a client never starts so.
    size_t first_client = 0;
    std::string backend;
    if (!rest.empty() && rest[0].rfind("fs=", 0) == 0) backend = rest[first_client++];
    export_entry e;
    std::string why;
    if (!open_root(&e, path, backend, &why)) {
      *err = where + why;
      return nullptr;
    }
    // Owned by the table from now on: an error below unmounts it with it.
    t->exports.emplace_back(std::move(e));
    for (size_t i = first_client; i < rest.size(); i++) {
      const std::string &client = rest[i];
      export_client c;
      std::string spec = client, opts;
      if (auto open = client.find('('); open != std::string::npos) {
        if (client.back() != ')') {
          *err = where.append("unbalanced parenthesis in '").append(client).append("'");
          return nullptr;
        }
        spec = client.substr(0, open);
        opts = client.substr(open + 1, client.size() - open - 2);
      }
      if (spec.empty()) spec.assign(1, '*');  // (= "*" trips GCC 12 -Wrestrict at -O3)
      if (!parse_client(spec, &c, &why) || !parse_options(opts, &c.opts, &why)) {
        *err = where + why;
        return nullptr;
      }
      t->exports.back().clients.push_back(c);
    }
    if (t->exports.back().clients.empty()) {
      *err = where.append("no clients for ")
                 .append(path)
                 .append(" (write '*(ro)' to export to everyone)");
      return nullptr;
    }
    for (size_t i = 0; i + 1 < t->exports.size(); i++) {
      if (t->exports[i].id == t->exports.back().id) {
        *err = where + path + " is exported twice";
        return nullptr;
      }
    }
  }
  if (t->exports.empty()) {
    *err = origin +
           ": no exports (add a line such as '/srv/nfs 192.168.1.0/24(rw)'; see kcont-exports(5))";
    return nullptr;
  }
  return t;
}

bool add_memory_export(export_table &t, const std::string &path, uint64_t max_bytes,
                       std::string *err, const vfs::memory_reproducible *repro) {
  if (path.empty() || path[0] != '/' || path.find("/..") != std::string::npos ||
      (path.size() > 1 && path.back() == '/')) {
    *err = "memory export " + path + ": give an absolute path without '..' or a trailing '/'";
    return false;
  }
  export_entry e;
  e.path = path;
  e.id = path_id(path);
  for (auto &o : t.exports) {
    if (o.id == e.id) {
      *err = "memory export " + path + " is exported twice";
      return false;
    }
  }
  std::string why;
  own_mount(&e, vfs::vfs_mount_memory(max_bytes, &why, repro));
  if (!e.fs) {
    *err = "memory export " + path + ": " + why;
    return false;
  }
  export_client c;
  std::string unused;
  parse_client("*", &c, &unused);
  c.opts.rw = true;
  c.opts.root_squash = false;
  e.clients.push_back(c);
  t.exports.push_back(std::move(e));
  return true;
}

std::shared_ptr<export_table> load_exports(const std::string &file, std::string *err) {
  std::ifstream f(file);
  if (!f) {
    *err = "cannot read exports file " + file + ": " + kc::error_text(errno);
    return nullptr;
  }
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_exports(ss.str(), file, err);
}

std::shared_ptr<export_table> single_export(const std::string &dir, std::string *err) {
  char real[PATH_MAX];
  if (!realpath(dir.c_str(), real)) {
    *err = "export " + dir + ": " + kc::error_text(errno);
    return nullptr;
  }
  return parse_exports(std::string(real) + " *(rw,no_root_squash)\n", "--export", err);
}

const export_opts *export_access(const export_entry &e, const sockaddr_storage &peer) {
  uint8_t addr[16];
  bool v6 = false;
  if (peer.ss_family == AF_INET) {
    std::memcpy(addr, &reinterpret_cast<const sockaddr_in &>(peer).sin_addr, 4);
  } else if (peer.ss_family == AF_INET6) {
    auto &a6 = reinterpret_cast<const sockaddr_in6 &>(peer).sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&a6)) {
      std::memcpy(addr, a6.s6_addr + 12, 4);
    } else {
      std::memcpy(addr, a6.s6_addr, 16);
      v6 = true;
    }
  } else {
    return nullptr;
  }
  for (const auto &c : e.clients) {
    if (c.any) return &c.opts;
    if (c.v6 != v6) continue;
    int bits = c.prefix, i = 0;
    bool match = true;
    for (; bits >= 8; bits -= 8, i++) {
      if (addr[i] != c.addr[i]) {
        match = false;
        break;
      }
    }
    if (match && bits > 0) {
      uint8_t m = uint8_t(0xff << (8 - bits));
      match = (addr[i] & m) == (c.addr[i] & m);
    }
    if (match) return &c.opts;
  }
  return nullptr;
}

}  // namespace kc::nfs
