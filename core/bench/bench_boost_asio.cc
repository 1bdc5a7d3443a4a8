// SPDX-License-Identifier: BSD-2-Clause
// Boost.Asio baseline: a handler that re-posts itself n times on a
// single-threaded io_context (concurrency hint 1, Asio's fastest setting).
// Boost 1.74 asio uses std::exchange without including <utility>.
// clang-format off
#include <utility>
#include <cstdint>
#include <boost/asio.hpp>
// clang-format on

namespace {
struct poster {
  boost::asio::io_context *io;
  uint64_t left;
  void operator()() {
    if (--left) boost::asio::post(*io, *this);
  }
};
}  // namespace

namespace {
boost::asio::io_context &ctx() {
  static boost::asio::io_context io(1);
  return io;
}
}  // namespace

void boost_asio_chain(uint64_t n) {
  boost::asio::io_context &io = ctx();
  boost::asio::post(io, poster{&io, n});
  io.run();
  io.restart();
}
