// SPDX-License-Identifier: BSD-2-Clause
// Standalone Asio baseline: a handler that re-posts itself n times on a
// single-threaded io_context (concurrency hint 1, Asio's fastest setting).
#include <asio.hpp>
#include <cstdint>

namespace {
struct poster {
  asio::io_context *io;
  uint64_t left;
  void operator()() {
    if (--left) asio::post(*io, *this);
  }
};
}  // namespace

namespace {
asio::io_context &ctx() {
  static asio::io_context io(1);
  return io;
}
}  // namespace

void asio_chain(uint64_t n) {
  asio::io_context &io = ctx();
  asio::post(io, poster{&io, n});
  io.run();
  io.restart();
}
