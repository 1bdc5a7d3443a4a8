// SPDX-License-Identifier: BSD-2-Clause
// Shared test fixture: starts kcont with two CPUs around each test.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "kcont/kcont.h"

namespace kctest {

// Whether this run is CI's (CI=true): there every test must run.
inline bool under_ci() {
  const char *ci = std::getenv("CI");
  return ci && std::strcmp(ci, "true") == 0;
}

}  // namespace kctest

// A test that cannot run here (no root, no ACLs, no membarrier): under
// CI=true a failure -- the CI machine has all of it, so a skip there would
// hide a missing test -- and elsewhere a skip that says NOT TESTED.
#define KCONT_NOT_TESTED(why)                        \
  do {                                               \
    if (::kctest::under_ci()) {                      \
      FAIL() << "NOT TESTED under CI=true: " << why; \
    } else {                                         \
      GTEST_SKIP() << "NOT TESTED: " << why;         \
    }                                                \
  } while (0)

namespace kctest {

inline int test_cpus() { return 2; }

class KcontTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kc::config cfg;
    cfg.cpus = test_cpus();
    std::string err;
    ASSERT_EQ(kc::kcont_start(cfg, &err), 0) << err;
  }
  void TearDown() override { kc::kcont_stop(); }
};

// Waits (bounded, generously) for pred(); returns its last value.  Never a
// timing assertion: the bound only keeps a broken build from hanging CI.
template <class P>
bool eventually(P pred, int seconds = 30) {
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  for (int i = 0; !pred(); i++) {
    if (std::chrono::steady_clock::now() > end) return pred();
    if (i < 2000)
      std::this_thread::yield();
    else
      std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return true;
}

// Runs fn on CPU `cpu`'s dispatcher in {lvl, interrupt} and waits for it.
template <class F>
void on_cpu(int cpu, F fn, kc::level lvl = kc::LVL_SOFTSERIAL) {
  ASSERT_EQ(kc::kcont_run_on(
                cpu, lvl, [](void *a) { (*static_cast<F *>(a))(); }, &fn),
            0);
}

}  // namespace kctest
