// SPDX-License-Identifier: BSD-2-Clause
// consumer.cc -- a program outside the kcont tree that uses an installed
// kcont: it starts the system on one CPU, defers a continuation to that
// CPU's dispatcher, waits for it with kcont_drain, checks that it ran there
// with the status it was given, and stops.  Built twice by
// packaging/test-install.sh: with find_package(kcont) and with
// `pkg-config --cflags --libs kcont`.  Prints "consumer: OK" and exits 0,
// or says what failed and exits 1.
#include <kcont/kcont.h>
#include <kcont/version.h>

#include <atomic>
#include <cstdio>
#include <string>

static_assert(KCONT_VERSION_NUMBER >= KCONT_VERSION_AT(0, 1, 0), "kcont 0.1 or later");

namespace {

struct record {
  std::atomic<int> status{-1};
  std::atomic<int> cpu{-1};
};

void on_cpu(void *, void *env, int status) {
  auto *r = static_cast<record *>(env);
  r->cpu.store(kc::kcont_current_cpu());
  r->status.store(status);
}

}  // namespace

int main() {
  std::string err;
  kc::config cfg;
  cfg.cpus = 1;
  if (int e = kc::kcont_start(cfg, &err)) {
    std::fprintf(stderr, "consumer: kcont_start failed (%d): %s\n", e, err.c_str());
    return 1;
  }
  record r;
  kc::kcont kc;
  int failed = 0;
  if (kc::kcont_init(&kc, on_cpu, &r, kc::target::at(kc::LVL_SOFTNET, kc::kind::interrupt, 0)) !=
          0 ||
      !kc::kcont_defer(&kc, nullptr, 42) || kc::kcont_drain(&kc) != 0) {
    std::fprintf(stderr, "consumer: could not defer and drain a continuation\n");
    failed = 1;
  } else if (r.status.load() != 42 || r.cpu.load() != 0) {
    std::fprintf(stderr, "consumer: the continuation ran with status %d on CPU %d\n",
                 r.status.load(), r.cpu.load());
    failed = 1;
  }
  kc::kcont_stop();
  if (!failed)
    std::printf("consumer: OK (kcont %s, API level %d)\n", KCONT_VERSION_STRING, KCONT_API_LEVEL);
  return failed;
}
