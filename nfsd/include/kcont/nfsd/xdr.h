// SPDX-License-Identifier: BSD-2-Clause
// xdr.h -- XDR (RFC 4506) decoding and encoding over caller-owned memory.
//
// Model: an xdr_in reads a record that already sits in memory; it never
// copies payloads: variable-length opaques and strings come back as views
// into the record (valid as long as the record buffer is).  Every read is
// bounds-checked; the first failure latches `ok = false`, later reads then
// return zeroes/empty views, so a decoder can read a whole structure and
// check once (GARBAGE_ARGS).  Lengths are checked against both the bytes
// left and a caller-supplied maximum before anything is used.
//
// An xdr_out writes into a fixed buffer; overflow latches `ok = false`
// instead of writing past the end.  `reserve` returns a position to patch
// later (record marks, counts known only at the end).
//
// Rules: no allocation, no locking; one decoder/encoder per thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace kc::nfs {

// Bytes of padding after n bytes of opaque data.
constexpr size_t xdr_pad(size_t n) { return (4 - (n & 3)) & 3; }

struct bytes_view {
  const uint8_t *data = nullptr;
  size_t len = 0;
  std::string_view str() const { return {reinterpret_cast<const char *>(data), len}; }
};

class xdr_in {
 public:
  xdr_in() = default;
  xdr_in(const uint8_t *p, size_t n) : p_(p), end_(p + n) {}

  bool ok() const { return ok_; }
  size_t left() const { return size_t(end_ - p_); }
  const uint8_t *pos() const { return p_; }
  void fail() { ok_ = false; }

  uint32_t u32() {
    if (!need(4)) return 0;
    uint32_t v = uint32_t(p_[0]) << 24 | uint32_t(p_[1]) << 16 | uint32_t(p_[2]) << 8 | p_[3];
    p_ += 4;
    return v;
  }
  int32_t i32() { return int32_t(u32()); }
  uint64_t u64() {
    uint64_t hi = u32();
    return hi << 32 | u32();
  }
  // XDR bool: anything but 0 or 1 is garbage.
  bool boolean() {
    uint32_t v = u32();
    if (v > 1) ok_ = false;
    return v == 1;
  }
  // Fixed-length opaque of n bytes (plus padding).
  bytes_view fixed(size_t n) {
    if (!need(n)) return {};  // first on its own, so that n + padding cannot wrap
    size_t padded = n + xdr_pad(n);
    if (!need(padded)) return {};
    bytes_view v{p_, n};
    p_ += padded;
    return v;
  }
  // Variable-length opaque or string of at most max bytes.
  bytes_view var(size_t max) {
    uint32_t n = u32();
    if (!ok_) return {};
    if (n > max) {
      ok_ = false;
      return {};
    }
    return fixed(n);
  }

 private:
  bool need(size_t n) {
    if (!ok_ || size_t(end_ - p_) < n) {
      ok_ = false;
      p_ = end_;
      return false;
    }
    return true;
  }
  const uint8_t *p_ = nullptr;
  const uint8_t *end_ = nullptr;
  bool ok_ = true;
};

class xdr_out {
 public:
  xdr_out() = default;
  xdr_out(uint8_t *p, size_t cap) : base_(p), cap_(cap) {}

  bool ok() const { return ok_; }
  size_t size() const { return len_; }
  size_t room() const { return cap_ - len_; }
  size_t capacity() const { return cap_; }
  uint8_t *data() const { return base_; }
  void rewind(size_t to) {
    if (to <= len_) len_ = to;
  }

  void u32(uint32_t v) {
    if (uint8_t *d = take(4)) put32(d, v);
  }
  void i32(int32_t v) { u32(uint32_t(v)); }
  void u64(uint64_t v) {
    u32(uint32_t(v >> 32));
    u32(uint32_t(v));
  }
  void boolean(bool b) { u32(b ? 1 : 0); }
  void fixed(const void *src, size_t n) {
    if (n > room()) {  // checked on its own, so that n + padding cannot wrap
      ok_ = false;
      return;
    }
    size_t pad = xdr_pad(n);
    if (uint8_t *d = take(n + pad)) {
      if (n) std::memcpy(d, src, n);
      std::memset(d + n, 0, pad);
    }
  }
  void var(const void *src, size_t n) {
    u32(uint32_t(n));
    fixed(src, n);
  }
  void str(std::string_view s) { var(s.data(), s.size()); }
  // Reserves a 4-byte slot to fill with patch(); returns its offset.
  size_t reserve() {
    size_t at = len_;
    u32(0);
    return at;
  }
  void patch(size_t at, uint32_t v) {
    if (ok_ && at + 4 <= len_) put32(base_ + at, v);
  }
  // Reserves n raw bytes (for data read straight into the reply).
  uint8_t *skip(size_t n) { return take(n); }
  // Zero padding after n bytes of opaque data written through skip().
  void pad(size_t n) {
    size_t k = xdr_pad(n);
    if (uint8_t *d = take(k)) std::memset(d, 0, k);
  }

  static void put32(uint8_t *d, uint32_t v) {
    d[0] = uint8_t(v >> 24);
    d[1] = uint8_t(v >> 16);
    d[2] = uint8_t(v >> 8);
    d[3] = uint8_t(v);
  }

 private:
  uint8_t *take(size_t n) {
    if (!ok_ || cap_ - len_ < n) {
      ok_ = false;
      return nullptr;
    }
    uint8_t *d = base_ + len_;
    len_ += n;
    return d;
  }
  uint8_t *base_ = nullptr;
  size_t cap_ = 0;
  size_t len_ = 0;
  bool ok_ = true;
};

}  // namespace kc::nfs
