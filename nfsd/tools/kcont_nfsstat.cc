// SPDX-License-Identifier: BSD-2-Clause
// kcont-nfsstat -- prints a running kcont-nfsd's counters, in the spirit of
// `nfsstat -s`: it fetches the server's --metrics endpoint (HTTP GET
// /metrics, Prometheus text format) and prints per-procedure calls,
// errors, average server time and the share completed without a thread,
// then bytes, connections, the memory budget and, per export, the vnode
// cache, thread context and attribute snapshots (vfs(9)).
//
//   kcont-nfsstat [ADDR:PORT]      (default 127.0.0.1:9449)
//
// Exit status 0, or 1 with a message when the endpoint cannot be read.
// Libraries: CLI11 for the command line; the HTTP exchange and the text
// format are small enough to do here (one GET, our own metric names).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "kcont/error_text.h"

namespace {

struct sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// Fetches http://addr:port/metrics; the body, or "" with *err.
std::string fetch(const std::string &target, std::string *err) {
  auto colon = target.rfind(':');
  if (colon == std::string::npos) {
    *err = target + ": give ADDR:PORT";
    return "";
  }
  std::string host = target.substr(0, colon);
  if (host.size() > 1 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  int port = std::atoi(target.c_str() + colon + 1);
  sockaddr_storage ss{};
  socklen_t len = 0;
  auto *a4 = reinterpret_cast<sockaddr_in *>(&ss);
  auto *a6 = reinterpret_cast<sockaddr_in6 *>(&ss);
  if (inet_pton(AF_INET, host.c_str(), &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons(uint16_t(port));
    len = sizeof *a4;
  } else if (inet_pton(AF_INET6, host.c_str(), &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(uint16_t(port));
    len = sizeof *a6;
  } else {
    *err = host + ": not an IPv4 or IPv6 address";
    return "";
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr *>(&ss), len) != 0) {
    *err = target + ": " + kc::error_text(errno) + " (is kcont-nfsd running with --metrics " +
           target + "?)";
    if (fd >= 0) close(fd);
    return "";
  }
  std::string req = "GET /metrics HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n";
  if (write(fd, req.data(), req.size()) != ssize_t(req.size())) {
    *err = target + ": " + kc::error_text(errno);
    close(fd);
    return "";
  }
  std::string resp;
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    resp.append(buf, size_t(n));
  }
  close(fd);
  auto body = resp.find("\r\n\r\n");
  if (resp.compare(0, 12, "HTTP/1.1 200") != 0 || body == std::string::npos) {
    *err = target + ": unexpected answer: " + resp.substr(0, resp.find('\r'));
    return "";
  }
  return resp.substr(body + 4);
}

// Parses `name{k="v",...} value` lines (comments skipped).
std::vector<sample> parse(const std::string &text) {
  std::vector<sample> out;
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(at, end - at);
    at = end + 1;
    if (line.empty() || line[0] == '#') continue;
    sample s;
    size_t i = line.find_first_of("{ ");
    if (i == std::string::npos) continue;
    s.name = line.substr(0, i);
    if (line[i] == '{') {
      i++;
      while (i < line.size() && line[i] != '}') {
        size_t eq = line.find("=\"", i);
        if (eq == std::string::npos) break;
        std::string key = line.substr(i, eq - i), val;
        size_t j = eq + 2;
        for (; j < line.size() && line[j] != '"'; j++) {
          if (line[j] == '\\' && j + 1 < line.size()) j++;
          val += line[j];
        }
        s.labels[key] = val;
        i = j + 1;
        if (i < line.size() && line[i] == ',') i++;
      }
      i = line.find(' ', i);
      if (i == std::string::npos) continue;
    }
    s.value = std::strtod(line.c_str() + i + 1, nullptr);
    out.push_back(std::move(s));
  }
  return out;
}

double find(const std::vector<sample> &all, const std::string &name,
            const std::map<std::string, std::string> &labels = {}) {
  for (const auto &s : all) {
    if (s.name != name) continue;
    bool match = true;
    for (const auto &[k, v] : labels) {
      auto it = s.labels.find(k);
      if (it == s.labels.end() || it->second != v) match = false;
    }
    if (match) return s.value;
  }
  return 0;
}

void print_program(const std::vector<sample> &all, const char *prog, const char *title) {
  std::printf("%s\n%-13s %12s %10s %12s %10s\n", title, "procedure", "calls", "errors", "avg us",
              "no thread");
  for (const auto &s : all) {
    if (s.name != "kcont_nfsd_calls_total" || s.labels.at("program") != prog) continue;
    const std::string &proc = s.labels.at("procedure");
    std::map<std::string, std::string> l{{"program", prog}, {"procedure", proc}};
    double calls = s.value;
    double errors = find(all, "kcont_nfsd_call_errors_total", l);
    double free = find(all, "kcont_nfsd_calls_without_thread_total", l);
    double sum = find(all, "kcont_nfsd_call_duration_seconds_sum", l);
    if (calls == 0) {
      std::printf("%-13s %12.0f\n", proc.c_str(), calls);
      continue;
    }
    std::printf("%-13s %12.0f %10.0f %12.1f %9.1f%%\n", proc.c_str(), calls, errors,
                sum / calls * 1e6, 100.0 * free / calls);
  }
  std::printf("\n");
}

}  // namespace

static int run_nfsstat(int argc, char **argv) {
  CLI::App app{"kcont-nfsstat: a running kcont-nfsd's counters, from its --metrics endpoint"};
  std::string target = "127.0.0.1:9449";
  app.add_option("endpoint", target, "The server's --metrics ADDR:PORT")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  std::string err;
  std::string text = fetch(target, &err);
  if (text.empty()) {
    std::fprintf(stderr, "kcont-nfsstat: %s\n", err.c_str());
    return 1;
  }
  std::vector<sample> all = parse(text);
  print_program(all, "nfs", "Server nfs v3:");
  print_program(all, "mount", "Server mount v3:");
  auto v = [&](const char *name, const std::map<std::string, std::string> &l = {}) {
    return find(all, name, l);
  };
  std::printf("data: read %.1f MiB, written %.1f MiB; rpc errors %.0f, bad records %.0f\n",
              v("kcont_nfsd_read_bytes_total") / 1048576.0,
              v("kcont_nfsd_written_bytes_total") / 1048576.0, v("kcont_nfsd_rpc_errors_total"),
              v("kcont_nfsd_bad_records_total"));
  std::printf(
      "connections: nfs %.0f, mount %.0f; accepted %.0f, refused %.0f full + %.0f per address + "
      "%.0f memory, evicted %.0f, closed %.0f idle + %.0f stalled\n",
      v("kcont_nfsd_connections", {{"port", "nfs"}}),
      v("kcont_nfsd_connections", {{"port", "mount"}}), v("kcont_nfsd_connections_accepted_total"),
      v("kcont_nfsd_connections_refused_total", {{"reason", "full"}}),
      v("kcont_nfsd_connections_refused_total", {{"reason", "per_address"}}),
      v("kcont_nfsd_connections_refused_total", {{"reason", "memory"}}),
      v("kcont_nfsd_connections_evicted_total"),
      v("kcont_nfsd_connections_closed_total", {{"reason", "idle"}}),
      v("kcont_nfsd_connections_closed_total", {{"reason", "stalled"}}));
  std::printf("memory: %.0f of %.0f MiB (peak %.0f), %.0f waits\n",
              v("kcont_nfsd_buffer_memory_bytes") / 1048576.0,
              v("kcont_nfsd_buffer_memory_limit_bytes") / 1048576.0,
              v("kcont_nfsd_buffer_memory_peak_bytes") / 1048576.0,
              v("kcont_nfsd_buffer_memory_waits_total"));
  // Per export: the vnode cache, thread context and attribute snapshots.
  std::vector<std::string> exports;
  for (const auto &s : all)
    if (s.name == "kcont_vfs_handle_cache_hits_total" && s.labels.count("export"))
      exports.push_back(s.labels.at("export"));
  for (const auto &e : exports) {
    auto x = [&](const char *name) { return v(name, {{"export", e}}); };
    double hits = x("kcont_vfs_handle_cache_hits_total");
    double misses = x("kcont_vfs_handle_cache_misses_total");
    double shared = x("kcont_vfs_attributes_shared_total");
    double read = x("kcont_vfs_attributes_read_total");
    std::printf(
        "export %s: handles %.0f cached + %.0f opened (%.0f entered by CREATE); thread context "
        "%.0f running, %.0f waiting; attributes shared %.0f of %.0f (%.1f%%)\n",
        e.c_str(), hits, misses, x("kcont_vfs_handle_cache_primed_total"),
        x("kcont_vfs_thread_context_running"), x("kcont_vfs_thread_context_waiting"), shared,
        shared + read, shared + read > 0 ? 100.0 * shared / (shared + read) : 0.0);
  }
  std::vector<std::string> errs;
  for (const auto &s : all)
    if (s.name == "kcont_nfsd_nfs_errors_total" && s.value > 0)
      errs.push_back(s.labels.at("status") + " " + std::to_string(uint64_t(s.value)));
  if (!errs.empty()) {
    std::printf("nfs errors:");
    for (auto &e : errs) std::printf(" %s", e.c_str());
    std::printf("\n");
  }
  return 0;
}

// Nothing the program does should throw past its own handling (CLI11 reports
// bad options itself); should a library throw anyway (std::bad_alloc, a
// filesystem error), say so and exit 1 instead of std::terminate's abort.
int main(int argc, char **argv) {
  try {
    return run_nfsstat(argc, argv);
  } catch (const std::exception &e) {
    std::fprintf(stderr, "kcont-nfsstat: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "kcont-nfsstat: unexpected exception\n");
  }
  return 1;
}
