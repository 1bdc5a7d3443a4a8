// SPDX-License-Identifier: BSD-2-Clause
// Iteration counts for race tests: many thousands in plain builds, fewer
// (still thousands) under sanitizers, which are 5-20x slower.
#pragma once

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
inline constexpr int kStressScale = 1;
#else
inline constexpr int kStressScale = 5;
#endif

inline int stress_iters(int base) { return base * kStressScale; }
