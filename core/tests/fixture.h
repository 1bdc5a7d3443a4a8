// SPDX-License-Identifier: BSD-2-Clause
// Shared test fixture: starts kcont with two CPUs around each test.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "kcont/kcont.h"

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
