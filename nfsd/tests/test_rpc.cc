// SPDX-License-Identifier: BSD-2-Clause
// test_rpc.cc -- unit tests of the wire layer: XDR (xdr_in / xdr_out),
// ONC RPC record marking (record_reader), call-header decoding
// (decode_call) and the reply-header encoders.
//
// How: everything here is pure computation on memory, so the tests build
// byte strings by hand (big-endian words), run them through the code under
// test and compare exact results.  Inputs live in heap buffers of exactly
// their length, so an out-of-range read or write is caught by ASan in the
// sanitizer build; output buffers carry canary bytes past their declared
// capacity.  Record reassembly is checked with every split of a stream,
// byte-by-byte feeding and seeded random chunk sizes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kcont/nfsd/rpc.h"
#include "kcont/nfsd/xdr.h"

using namespace kc::nfs;

namespace {

using bytes = std::vector<uint8_t>;

// Appends big-endian 32-bit words.
bytes words(std::initializer_list<uint32_t> ws) {
  bytes b;
  for (uint32_t w : ws) {
    b.push_back(uint8_t(w >> 24));
    b.push_back(uint8_t(w >> 16));
    b.push_back(uint8_t(w >> 8));
    b.push_back(uint8_t(w));
  }
  return b;
}

void append(bytes &to, const bytes &from) { to.insert(to.end(), from.begin(), from.end()); }

uint32_t get32(const uint8_t *p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}

// ---- XDR ----------------------------------------------------------------------

TEST(Xdr, PadIsToTheNextMultipleOfFour) {
  EXPECT_EQ(xdr_pad(0), 0u);
  EXPECT_EQ(xdr_pad(1), 3u);
  EXPECT_EQ(xdr_pad(2), 2u);
  EXPECT_EQ(xdr_pad(3), 1u);
  EXPECT_EQ(xdr_pad(4), 0u);
  EXPECT_EQ(xdr_pad(5), 3u);
}

TEST(Xdr, ScalarsRoundTripBigEndian) {
  uint8_t buf[64];
  xdr_out out(buf, sizeof buf);
  out.u32(0x01020304);
  out.i32(-2);
  out.u64(0x1122334455667788ull);
  out.boolean(true);
  out.boolean(false);
  ASSERT_TRUE(out.ok());
  ASSERT_EQ(out.size(), 4u + 4 + 8 + 4 + 4);
  EXPECT_EQ(bytes(buf, buf + out.size()),
            words({0x01020304, 0xfffffffe, 0x11223344, 0x55667788, 1, 0}));

  xdr_in in(buf, out.size());
  EXPECT_EQ(in.u32(), 0x01020304u);
  EXPECT_EQ(in.i32(), -2);
  EXPECT_EQ(in.u64(), 0x1122334455667788ull);
  EXPECT_TRUE(in.boolean());
  EXPECT_FALSE(in.boolean());
  EXPECT_TRUE(in.ok());
  EXPECT_EQ(in.left(), 0u);
}

TEST(Xdr, OpaquesRoundTripWithZeroPadding) {
  const char src[] = "abcdefgh";
  for (size_t n = 0; n <= 8; n++) {
    SCOPED_TRACE("length " + std::to_string(n));
    uint8_t buf[64];
    std::memset(buf, 0xee, sizeof buf);
    xdr_out out(buf, sizeof buf);
    out.fixed(src, n);
    out.var(src, n);
    out.str(std::string_view(src, n));
    ASSERT_TRUE(out.ok());
    size_t padded = n + xdr_pad(n);
    ASSERT_EQ(out.size(), padded + 2 * (4 + padded));
    // Fixed: the bytes, then zero padding; var and str: length word first.
    EXPECT_EQ(std::memcmp(buf, src, n), 0);
    for (size_t i = n; i < padded; i++) EXPECT_EQ(buf[i], 0) << "pad byte " << i;
    EXPECT_EQ(get32(buf + padded), n);
    EXPECT_EQ(get32(buf + padded + 4 + padded), n);
    for (size_t i = 0; i < xdr_pad(n); i++) EXPECT_EQ(buf[padded + 4 + n + i], 0);
    EXPECT_EQ(buf[out.size()], 0xee);  // nothing written past the end

    bytes rec(buf, buf + out.size());
    xdr_in in(rec.data(), rec.size());
    bytes_view f = in.fixed(n);
    bytes_view v = in.var(n);
    bytes_view s = in.var(8);
    ASSERT_TRUE(in.ok());
    EXPECT_EQ(in.left(), 0u);
    EXPECT_EQ(f.len, n);
    EXPECT_EQ(v.len, n);
    EXPECT_EQ(s.str(), std::string_view(src, n));
    EXPECT_EQ(f.str(), std::string_view(src, n));
    EXPECT_EQ(v.data, rec.data() + padded + 4);  // a view into the record, no copy
  }
}

TEST(Xdr, ShortReadsLatchFailureAndReturnZeroes) {
  // Exactly-sized heap buffers: ASan flags any read past them.
  for (size_t n = 0; n < 4; n++) {
    bytes b(n, 0xff);
    xdr_in in(b.data(), b.size());
    EXPECT_EQ(in.u32(), 0u);
    EXPECT_FALSE(in.ok());
    EXPECT_EQ(in.left(), 0u);
  }
  bytes seven(7, 0xff);
  xdr_in in(seven.data(), seven.size());
  in.u64();  // (returns the high word it managed to read, shifted: only ok() counts)
  EXPECT_FALSE(in.ok());
  EXPECT_EQ(in.left(), 0u);

  // Once failed, every later read fails even if bytes would be there.
  bytes eight = words({5, 6});
  xdr_in in2(eight.data(), eight.size());
  in2.fail();
  EXPECT_EQ(in2.u32(), 0u);
  EXPECT_EQ(in2.var(100).len, 0u);
  EXPECT_EQ(in2.fixed(0).data, nullptr);
  EXPECT_FALSE(in2.ok());
}

TEST(Xdr, FailureIsStickyAfterAGoodRead) {
  bytes b = words({42});
  b.push_back(1);  // 5 bytes: one word and a stray byte
  xdr_in in(b.data(), b.size());
  EXPECT_EQ(in.u32(), 42u);
  EXPECT_TRUE(in.ok());
  EXPECT_EQ(in.u32(), 0u);
  EXPECT_FALSE(in.ok());
  EXPECT_EQ(in.u32(), 0u);
  EXPECT_FALSE(in.ok());
}

TEST(Xdr, BooleanOtherThanZeroOrOneIsGarbage) {
  bytes b = words({2});
  xdr_in in(b.data(), b.size());
  in.boolean();
  EXPECT_FALSE(in.ok());
  bytes c = words({0xffffffff});
  xdr_in in2(c.data(), c.size());
  in2.boolean();
  EXPECT_FALSE(in2.ok());
}

TEST(Xdr, FixedNeedsItsPaddingToo) {
  bytes b(7, 'x');  // 5 bytes + 3 padding = 8 needed
  xdr_in in(b.data(), b.size());
  EXPECT_EQ(in.fixed(5).data, nullptr);
  EXPECT_FALSE(in.ok());

  bytes c(8, 'x');
  xdr_in in2(c.data(), c.size());
  EXPECT_EQ(in2.fixed(5).len, 5u);
  EXPECT_TRUE(in2.ok());
  EXPECT_EQ(in2.left(), 0u);
}

TEST(Xdr, HugeFixedLengthFailsWithoutWrapping) {
  bytes b(16, 'x');
  for (size_t n : {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - 2, SIZE_MAX - 3, size_t(17)}) {
    xdr_in in(b.data(), b.size());
    bytes_view v = in.fixed(n);
    EXPECT_FALSE(in.ok()) << n;
    EXPECT_EQ(v.len, 0u) << n;
    EXPECT_EQ(in.left(), 0u) << n;
  }
}

TEST(Xdr, VarLongerThanItsMaximumFails) {
  bytes b = words({9});
  append(b, bytes(12, 'a'));
  xdr_in in(b.data(), b.size());
  bytes_view v = in.var(8);
  EXPECT_FALSE(in.ok());
  EXPECT_EQ(v.len, 0u);
  EXPECT_EQ(v.data, nullptr);

  xdr_in ok(b.data(), b.size());
  EXPECT_EQ(ok.var(9).len, 9u);  // the maximum itself is allowed
  EXPECT_TRUE(ok.ok());
}

TEST(Xdr, VarLongerThanTheBytesLeftFails) {
  for (uint32_t len : {5u, 8u, 0x7fffffffu, 0xfffffffcu, 0xffffffffu}) {
    bytes b = words({len});
    append(b, bytes(4, 'a'));
    xdr_in in(b.data(), b.size());
    bytes_view v = in.var(SIZE_MAX);
    EXPECT_FALSE(in.ok()) << len;
    EXPECT_EQ(v.len, 0u) << len;
    EXPECT_EQ(in.left(), 0u) << len;
  }
  // Length present but padding missing.
  bytes b = words({3});
  append(b, bytes(3, 'a'));
  xdr_in in(b.data(), b.size());
  in.var(16);
  EXPECT_FALSE(in.ok());
}

TEST(Xdr, OutputOverflowLatchesAndNeverWritesPastCapacity) {
  constexpr size_t CAP = 10;
  uint8_t buf[CAP + 16];
  std::memset(buf, 0xcc, sizeof buf);
  xdr_out out(buf, CAP);
  out.u32(1);
  out.u32(2);
  EXPECT_TRUE(out.ok());
  EXPECT_EQ(out.room(), 2u);
  out.u32(3);  // 2 bytes left: fails
  EXPECT_FALSE(out.ok());
  EXPECT_EQ(out.size(), 8u);
  out.u64(4);
  out.fixed("xy", 2);
  out.var("z", 1);
  out.str("");
  EXPECT_EQ(out.skip(1), nullptr);
  out.pad(1);
  out.patch(8, 7);  // beyond what was written: ignored
  EXPECT_EQ(out.size(), 8u);
  for (size_t i = 8; i < sizeof buf; i++) EXPECT_EQ(buf[i], 0xcc) << "byte " << i;
}

TEST(Xdr, OutputPaddingCountsAgainstCapacity) {
  uint8_t buf[16];
  std::memset(buf, 0xcc, sizeof buf);
  xdr_out out(buf, 7);
  out.fixed("abcde", 5);  // needs 8
  EXPECT_FALSE(out.ok());
  EXPECT_EQ(out.size(), 0u);
  for (uint8_t c : buf) EXPECT_EQ(c, 0xcc);

  xdr_out out2(buf, 8);
  out2.var("abcd", 4);  // exactly fits
  EXPECT_TRUE(out2.ok());
  EXPECT_EQ(out2.size(), 8u);
  EXPECT_EQ(out2.room(), 0u);
  EXPECT_EQ(buf[8], 0xcc);
}

TEST(Xdr, HugeOutputLengthFailsWithoutWrapping) {
  uint8_t buf[32];
  std::memset(buf, 0xcc, sizeof buf);
  for (size_t n : {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - 2, SIZE_MAX - 3}) {
    xdr_out out(buf, 16);
    out.fixed(buf, n);  // never read: the length alone must fail
    EXPECT_FALSE(out.ok()) << n;
    EXPECT_EQ(out.size(), 0u) << n;
  }
  for (uint8_t c : buf) EXPECT_EQ(c, 0xcc);
}

TEST(Xdr, ReservePatchSkipRewind) {
  uint8_t buf[32] = {};
  xdr_out out(buf, sizeof buf);
  size_t at = out.reserve();
  EXPECT_EQ(at, 0u);
  uint8_t *raw = out.skip(3);
  ASSERT_NE(raw, nullptr);
  std::memcpy(raw, "abc", 3);
  out.pad(3);
  out.patch(at, 0xdeadbeef);
  EXPECT_EQ(out.size(), 8u);
  EXPECT_EQ(get32(buf), 0xdeadbeefu);
  EXPECT_EQ(std::memcmp(buf + 4, "abc\0", 4), 0);
  out.rewind(4);
  EXPECT_EQ(out.size(), 4u);
  out.rewind(100);  // forward: ignored
  EXPECT_EQ(out.size(), 4u);
}

// ---- record marking -----------------------------------------------------------

// A stream holding one record cut into fragments of the given sizes (the
// last one flagged); the record's bytes are 1, 2, 3, ...
bytes framed(const std::vector<uint32_t> &frags, uint8_t first = 1, bytes *record = nullptr) {
  bytes s;
  uint8_t v = first;
  for (size_t i = 0; i < frags.size(); i++) {
    uint32_t mark = frags[i] | (i + 1 == frags.size() ? 0x80000000u : 0);
    append(s, words({mark}));
    for (uint32_t k = 0; k < frags[i]; k++) {
      if (record) record->push_back(v);
      s.push_back(v++);
    }
  }
  return s;
}

struct feed_result {
  std::vector<bytes> records;
  record_reader::result error = record_reader::more;  // too_big / bad_fragment
  size_t consumed = 0;
  bool idle_at_end = false;
};

// Feeds `stream` to a record_reader in chunks of at most chunk(pos) bytes
// (further cut where want() says).  Records land in exactly-sized heap
// buffers of `cap` bytes, alternating between two.
template <class Chunk>
feed_result feed(const bytes &stream, size_t cap, Chunk chunk) {
  feed_result r;
  std::vector<uint8_t> bufs[2] = {std::vector<uint8_t>(cap), std::vector<uint8_t>(cap)};
  int which = 0;
  record_reader rr;
  EXPECT_FALSE(rr.started());
  rr.begin(bufs[which].data(), cap);
  EXPECT_TRUE(rr.idle());
  size_t pos = 0;
  while (pos < stream.size()) {
    size_t n = 0;
    uint8_t *dst = rr.want(&n);
    EXPECT_GT(n, 0u);
    size_t k = std::min({n, size_t(chunk(pos)), stream.size() - pos});
    std::memcpy(dst, stream.data() + pos, k);
    pos += k;
    auto res = rr.commit(k);
    if (res == record_reader::record) {
      EXPECT_LE(rr.length(), cap);
      r.records.emplace_back(bufs[which].data(), bufs[which].data() + rr.length());
      which ^= 1;
      rr.begin(bufs[which].data(), cap);
    } else if (res != record_reader::more) {
      r.error = res;
      break;
    }
  }
  r.consumed = pos;
  r.idle_at_end = rr.idle();
  return r;
}

feed_result feed_all(const bytes &stream, size_t cap) {
  return feed(stream, cap, [](size_t) { return SIZE_MAX; });
}

TEST(RecordReader, SingleFragment) {
  bytes rec;
  bytes s = framed({12}, 1, &rec);
  auto r = feed_all(s, 64);
  EXPECT_EQ(r.error, record_reader::more);
  ASSERT_EQ(r.records.size(), 1u);
  EXPECT_EQ(r.records[0], rec);
  EXPECT_TRUE(r.idle_at_end);
}

TEST(RecordReader, RecordExactlyFillingTheBuffer) {
  bytes rec;
  bytes s = framed({7, 9}, 1, &rec);
  auto r = feed_all(s, 16);
  ASSERT_EQ(r.records.size(), 1u);
  EXPECT_EQ(r.records[0], rec);
}

TEST(RecordReader, MultiFragmentSplitAtEveryByteBoundary) {
  bytes rec;
  bytes s = framed({5, 0, 7, 1, 0, 6}, 1, &rec);
  // Every single split point...
  for (size_t cut = 1; cut < s.size(); cut++) {
    auto r = feed(s, 64, [&](size_t pos) { return pos < cut ? cut - pos : SIZE_MAX; });
    ASSERT_EQ(r.records.size(), 1u) << "cut at " << cut;
    EXPECT_EQ(r.records[0], rec) << "cut at " << cut;
  }
  // ...every pair of split points (want() may cut chunks further)...
  for (size_t a = 1; a < s.size(); a++) {
    for (size_t b = a + 1; b < s.size(); b++) {
      auto r = feed(s, 64, [&](size_t pos) {
        size_t next = pos < a ? a : pos < b ? b : s.size();
        return next - pos;
      });
      ASSERT_EQ(r.records.size(), 1u) << a << "," << b;
      EXPECT_EQ(r.records[0], rec) << a << "," << b;
    }
  }
  // ...and one byte at a time.
  auto r = feed(s, 64, [](size_t) { return 1; });
  ASSERT_EQ(r.records.size(), 1u);
  EXPECT_EQ(r.records[0], rec);
  EXPECT_EQ(r.consumed, s.size());
  EXPECT_TRUE(r.idle_at_end);
}

TEST(RecordReader, RandomChunkSizes) {
  std::mt19937 rng(12345);
  for (int iter = 0; iter < 300; iter++) {
    // A stream of 1..4 records of 1..5 fragments each (some empty).
    bytes s;
    std::vector<bytes> want;
    int nrec = 1 + int(rng() % 4);
    uint8_t v = 1;
    for (int k = 0; k < nrec; k++) {
      std::vector<uint32_t> frags;
      int nf = 1 + int(rng() % 5);
      for (int f = 0; f < nf; f++) frags.push_back(rng() % 4 == 0 ? 0 : rng() % 40);
      if (frags.back() == 0) frags.back() = 1;  // never an empty record
      bytes rec;
      append(s, framed(frags, v, &rec));
      v = uint8_t(v + rec.size());
      want.push_back(rec);
    }
    auto r = feed(s, 256, [&](size_t) { return 1 + rng() % 13; });
    EXPECT_EQ(r.error, record_reader::more);
    EXPECT_EQ(r.records, want) << "iteration " << iter;
    EXPECT_TRUE(r.idle_at_end);
  }
}

TEST(RecordReader, EmptyMiddleFragmentsAreLegal) {
  bytes rec;
  bytes s = framed({0, 0, 4, 0, 4}, 1, &rec);
  auto r = feed_all(s, 16);
  ASSERT_EQ(r.records.size(), 1u);
  EXPECT_EQ(r.records[0], rec);
  // A nonempty record may also end with an empty last fragment.
  bytes rec2;
  bytes s2 = framed({6, 0}, 1, &rec2);
  auto r2 = feed_all(s2, 16);
  ASSERT_EQ(r2.records.size(), 1u);
  EXPECT_EQ(r2.records[0], rec2);
}

TEST(RecordReader, RecordLargerThanTheBufferIsTooBig) {
  auto r = feed_all(framed({17}), 16);
  EXPECT_EQ(r.error, record_reader::too_big);
  EXPECT_TRUE(r.records.empty());
  EXPECT_EQ(r.consumed, 4u);  // refused at the mark, before any body byte

  // Fragments that fit one by one but not together.
  auto r2 = feed_all(framed({10, 10}), 16);
  EXPECT_EQ(r2.error, record_reader::too_big);
  EXPECT_EQ(r2.consumed, 4u + 10 + 4);

  // The largest mark there is.
  auto r3 = feed(words({0xffffffff}), 16, [](size_t) { return 1; });
  EXPECT_EQ(r3.error, record_reader::too_big);
  auto r4 = feed_all(words({0x7fffffff}), 1 << 20);
  EXPECT_EQ(r4.error, record_reader::too_big);
}

TEST(RecordReader, EmptyLastFragmentOnlyIsBadFragment) {
  auto r = feed_all(words({0x80000000}), 16);
  EXPECT_EQ(r.error, record_reader::bad_fragment);
  auto r2 = feed_all(words({0, 0, 0x80000000}), 16);  // all fragments empty
  EXPECT_EQ(r2.error, record_reader::bad_fragment);
}

TEST(RecordReader, RecordsBackToBack) {
  bytes a, b, c;
  bytes s = framed({8}, 1, &a);
  append(s, framed({3, 5}, 50, &b));
  append(s, framed({1}, 99, &c));
  for (size_t chunk : {size_t(1), size_t(3), size_t(7), SIZE_MAX}) {
    auto r = feed(s, 16, [&](size_t) { return chunk; });
    ASSERT_EQ(r.records.size(), 3u) << chunk;
    EXPECT_EQ(r.records[0], a);
    EXPECT_EQ(r.records[1], b);
    EXPECT_EQ(r.records[2], c);
    EXPECT_TRUE(r.idle_at_end);
  }
}

TEST(RecordReader, IdleOnlyBetweenRecords) {
  uint8_t buf[16];
  record_reader rr;
  rr.begin(buf, sizeof buf);
  EXPECT_TRUE(rr.idle());
  size_t n;
  uint8_t *p = rr.want(&n);
  ASSERT_EQ(n, 4u);
  p[0] = 0x80;
  EXPECT_EQ(rr.commit(1), record_reader::more);
  EXPECT_FALSE(rr.idle());  // part of a mark
  p = rr.want(&n);
  ASSERT_EQ(n, 3u);
  p[0] = 0;
  p[1] = 0;
  p[2] = 2;
  EXPECT_EQ(rr.commit(3), record_reader::more);
  p = rr.want(&n);
  ASSERT_EQ(n, 2u);
  EXPECT_EQ(p, buf);
  p[0] = 'h';
  EXPECT_EQ(rr.commit(1), record_reader::more);
  EXPECT_FALSE(rr.idle());  // part of a body
  p = rr.want(&n);
  ASSERT_EQ(n, 1u);
  EXPECT_EQ(p, buf + 1);
  p[0] = 'i';
  EXPECT_EQ(rr.commit(1), record_reader::record);
  EXPECT_EQ(rr.length(), 2u);
  EXPECT_EQ(std::memcmp(buf, "hi", 2), 0);
  rr.begin(buf, sizeof buf);
  EXPECT_TRUE(rr.idle());
}

// ---- call decoding --------------------------------------------------------------

// An AUTH_SYS credential body.
bytes auth_sys_body(uint32_t uid, uint32_t gid, const std::vector<uint32_t> &gids,
                    const std::string &machine = "host") {
  uint8_t buf[512];
  xdr_out o(buf, sizeof buf);
  o.u32(77);  // stamp
  o.str(machine);
  o.u32(uid);
  o.u32(gid);
  o.u32(uint32_t(gids.size()));
  for (uint32_t g : gids) o.u32(g);
  return bytes(buf, buf + o.size());
}

// A call header (no arguments) with the given credential and an AUTH_NONE
// verifier.
bytes call_header(uint32_t xid, uint32_t flavor, const bytes &cred_body, uint32_t rpcvers = 2,
                  uint32_t type = RPC_CALL) {
  bytes b = words({xid, type, rpcvers, 100003, 3, 1, flavor, uint32_t(cred_body.size())});
  append(b, cred_body);
  b.resize(b.size() + xdr_pad(cred_body.size()));
  append(b, words({AUTH_NONE, 0}));
  return b;
}

// Decodes a copy of msg (exactly sized: ASan sees any overrun; views in *c
// into the credential die with it).
call_status decode(const bytes &msg, rpc_call *c, size_t *left = nullptr) {
  bytes exact(msg);
  xdr_in in(exact.data(), exact.size());
  call_status st = decode_call(in, c);
  if (left) *left = in.left();
  return st;
}

TEST(DecodeCall, AuthNone) {
  bytes msg = call_header(0xabcdef01, AUTH_NONE, {});
  append(msg, words({0x55, 0x66}));  // two words of arguments
  rpc_call c;
  size_t left = 0;
  ASSERT_EQ(decode(msg, &c, &left), call_status::ok);
  EXPECT_EQ(c.xid, 0xabcdef01u);
  EXPECT_EQ(c.rpcvers, 2u);
  EXPECT_EQ(c.prog, 100003u);
  EXPECT_EQ(c.vers, 3u);
  EXPECT_EQ(c.proc, 1u);
  EXPECT_EQ(c.flavor, AUTH_NONE);
  EXPECT_EQ(left, 8u);  // positioned at the arguments
}

TEST(DecodeCall, ArgumentsFollowTheVerifier) {
  bytes msg = call_header(1, AUTH_NONE, {});
  append(msg, words({0x55}));
  bytes exact(msg);
  xdr_in in(exact.data(), exact.size());
  rpc_call c;
  ASSERT_EQ(decode_call(in, &c), call_status::ok);
  EXPECT_EQ(in.u32(), 0x55u);
  EXPECT_TRUE(in.ok());
}

TEST(DecodeCall, AuthSysWithGids) {
  bytes msg = call_header(7, AUTH_SYS, auth_sys_body(1000, 100, {4, 24, 27}, "client.example"));
  bytes exact(msg);  // the machine name is a view into the record: keep it alive
  xdr_in in(exact.data(), exact.size());
  rpc_call c;
  ASSERT_EQ(decode_call(in, &c), call_status::ok);
  EXPECT_EQ(in.left(), 0u);
  EXPECT_EQ(c.flavor, AUTH_SYS);
  EXPECT_EQ(c.sys.stamp, 77u);
  EXPECT_EQ(c.sys.machine.str(), "client.example");
  EXPECT_EQ(c.sys.uid, 1000u);
  EXPECT_EQ(c.sys.gid, 100u);
  ASSERT_EQ(c.sys.ngids, 3u);
  EXPECT_EQ(c.sys.gids[0], 4u);
  EXPECT_EQ(c.sys.gids[1], 24u);
  EXPECT_EQ(c.sys.gids[2], 27u);
}

TEST(DecodeCall, AuthSysGidLimit) {
  std::vector<uint32_t> gids(MAX_GIDS);
  for (uint32_t i = 0; i < MAX_GIDS; i++) gids[i] = 1000 + i;
  rpc_call c;
  ASSERT_EQ(decode(call_header(1, AUTH_SYS, auth_sys_body(1, 1, gids)), &c), call_status::ok);
  EXPECT_EQ(c.sys.ngids, MAX_GIDS);
  EXPECT_EQ(c.sys.gids[MAX_GIDS - 1], 1000 + MAX_GIDS - 1);

  gids.push_back(5000);  // 17 gids
  rpc_call c2;
  EXPECT_EQ(decode(call_header(1, AUTH_SYS, auth_sys_body(1, 1, gids)), &c2),
            call_status::bad_cred);
  // A gid count that claims more than the body holds.
  bytes body = auth_sys_body(1, 1, {});
  body[body.size() - 1] = 0xff;  // ngids = 255
  rpc_call c3;
  EXPECT_EQ(decode(call_header(1, AUTH_SYS, body), &c3), call_status::bad_cred);
}

TEST(DecodeCall, MalformedAuthSysBodyIsBadCred) {
  bytes body = auth_sys_body(1, 1, {2});
  bytes extra = body;
  append(extra, words({9}));  // trailing bytes in the credential
  rpc_call c;
  EXPECT_EQ(decode(call_header(1, AUTH_SYS, extra), &c), call_status::bad_cred);
  for (size_t cut = 0; cut < body.size(); cut++) {
    bytes shorter(body.begin(), body.begin() + cut);
    rpc_call c2;
    EXPECT_EQ(decode(call_header(1, AUTH_SYS, shorter), &c2), call_status::bad_cred) << cut;
  }
  rpc_call c4;
  EXPECT_EQ(decode(call_header(1, AUTH_SYS, auth_sys_body(1, 1, {}, std::string(256, 'm'))), &c4),
            call_status::bad_cred);  // machine name over 255 bytes
}

TEST(DecodeCall, UnknownFlavoursAreBadCred) {
  for (uint32_t flavor : {2u, 3u, 6u, 0xffffffffu}) {
    rpc_call c;
    EXPECT_EQ(decode(call_header(5, flavor, bytes(8, 1)), &c), call_status::bad_cred) << flavor;
    EXPECT_EQ(c.xid, 5u);
    EXPECT_EQ(c.flavor, flavor);
  }
}

TEST(DecodeCall, CredentialOverFourHundredBytesIsGarbage) {
  rpc_call c;
  EXPECT_EQ(decode(call_header(1, AUTH_NONE, bytes(400, 0)), &c), call_status::ok);
  EXPECT_EQ(decode(call_header(1, AUTH_NONE, bytes(404, 0)), &c), call_status::garbage);
  // Verifier too long.
  bytes msg = words({1, RPC_CALL, 2, 100003, 3, 0, AUTH_NONE, 0, AUTH_NONE, 404});
  append(msg, bytes(404, 0));
  EXPECT_EQ(decode(msg, &c), call_status::garbage);
}

TEST(DecodeCall, RpcVersionThreeIsMismatch) {
  rpc_call c;
  EXPECT_EQ(decode(call_header(0x1234, AUTH_NONE, {}, 3), &c), call_status::rpc_mismatch);
  EXPECT_EQ(c.xid, 0x1234u);
  EXPECT_EQ(c.rpcvers, 3u);
}

TEST(DecodeCall, ReplyIsNotACall) {
  rpc_call c;
  EXPECT_EQ(decode(words({9, RPC_REPLY, MSG_ACCEPTED, 0, 0, SUCCESS}), &c),
            call_status::not_a_call);
  EXPECT_EQ(c.xid, 9u);
  EXPECT_EQ(decode(words({9, 7}), &c), call_status::not_a_call);
}

TEST(DecodeCall, EveryTruncationIsGarbageNeverACrash) {
  bytes full = call_header(0x01020304, AUTH_SYS, auth_sys_body(0, 0, {1, 2, 3}));
  for (size_t len = 0; len < full.size(); len++) {
    bytes cut(full.begin(), full.begin() + len);
    rpc_call c;
    EXPECT_EQ(decode(cut, &c), call_status::garbage) << "length " << len;
    if (len >= 4) {
      EXPECT_EQ(c.xid, 0x01020304u) << "length " << len;
    }
  }
  rpc_call c;
  EXPECT_EQ(decode(full, &c), call_status::ok);
  // With arguments after the header, any cut inside them still decodes.
  bytes with_args = full;
  append(with_args, words({1, 2, 3}));
  for (size_t len = full.size(); len <= with_args.size(); len++) {
    rpc_call c2;
    EXPECT_EQ(decode(bytes(with_args.begin(), with_args.begin() + len), &c2), call_status::ok);
  }
}

TEST(DecodeCall, RandomBytesNeverCrash) {
  std::mt19937 rng(777);
  for (int i = 0; i < 2000; i++) {
    bytes b(rng() % 80);
    for (auto &x : b) x = uint8_t(rng());
    if (b.size() >= 8 && rng() % 2) {  // often make it look like a call
      b[4] = b[5] = b[6] = b[7] = 0;
      if (b.size() >= 12) b[8] = b[9] = b[10] = 0, b[11] = 2;
    }
    rpc_call c;
    decode(b, &c);
  }
}

// ---- reply headers --------------------------------------------------------------

bytes encoded(const std::function<void(xdr_out &)> &f, size_t *mark = nullptr) {
  uint8_t buf[128];
  xdr_out out(buf, sizeof buf);
  f(out);
  EXPECT_TRUE(out.ok());
  if (mark) {
    finish_record(out);
    *mark = get32(buf);
  }
  return bytes(buf, buf + out.size());
}

// RFC 5531: reply = xid, REPLY(1), reply_stat; accepted_reply = verifier
// (flavour, length), accept_stat [, mismatch_info]; rejected_reply =
// reject_stat, then mismatch_info (low, high) or auth_stat.
TEST(ReplyHeaders, AcceptedSuccessWithMark) {
  size_t mark = 0;
  bytes b = encoded([](xdr_out &o) { encode_accepted(o, 0x11223344, SUCCESS); }, &mark);
  bytes want = words({0, 0x11223344, 1, 0, 0, 0, 0});
  std::memcpy(want.data(), b.data(), 4);  // the mark, checked below
  EXPECT_EQ(b, want);
  EXPECT_EQ(mark, 0x80000000u | 24);
  EXPECT_EQ(bytes(b.begin(), b.begin() + 4), words({0x80000018}));
}

TEST(ReplyHeaders, AcceptErrorsWithoutMark) {
  struct {
    accept_stat st;
    uint32_t code;
  } cases[] = {{PROG_UNAVAIL, 1}, {PROC_UNAVAIL, 3}, {GARBAGE_ARGS, 4}, {SYSTEM_ERR, 5}};
  for (auto &k : cases) {
    bytes b = encoded([&](xdr_out &o) { encode_accepted(o, 42, k.st, false); });
    EXPECT_EQ(b, words({42, 1, 0, 0, 0, k.code})) << k.code;
  }
}

TEST(ReplyHeaders, ProgMismatchCarriesLowAndHigh) {
  size_t mark = 0;
  bytes b = encoded([](xdr_out &o) { encode_prog_mismatch(o, 5, 3, 3); }, &mark);
  EXPECT_EQ(b, words({0x80000000 | 32, 5, 1, 0, 0, 0, 2, 3, 3}));
  bytes nb = encoded([](xdr_out &o) { encode_prog_mismatch(o, 5, 2, 4, false); });
  EXPECT_EQ(nb, words({5, 1, 0, 0, 0, 2, 2, 4}));
}

TEST(ReplyHeaders, RpcMismatchIsDeniedTwoTwo) {
  size_t mark = 0;
  bytes b = encoded([](xdr_out &o) { encode_rpc_mismatch(o, 0xfeedface); }, &mark);
  EXPECT_EQ(b, words({0x80000000 | 24, 0xfeedface, 1, 1, 0, 2, 2}));
}

TEST(ReplyHeaders, AuthErrorCarriesTheAuthStat) {
  for (auth_stat why : {AUTH_BADCRED, AUTH_REJECTEDCRED, AUTH_TOOWEAK}) {
    size_t mark = 0;
    bytes b = encoded([&](xdr_out &o) { encode_auth_error(o, 3, why); }, &mark);
    EXPECT_EQ(b, words({0x80000000 | 20, 3, 1, 1, 1, uint32_t(why)}));
    bytes nb = encoded([&](xdr_out &o) { encode_auth_error(o, 3, why, false); });
    EXPECT_EQ(nb, words({3, 1, 1, 1, uint32_t(why)}));
  }
}

TEST(ReplyHeaders, FinishRecordCountsBodyAndExtraBytes) {
  uint8_t buf[64];
  xdr_out out(buf, sizeof buf);
  encode_accepted(out, 1, SUCCESS);
  out.u32(0);  // a status word
  finish_record(out, 1000);
  EXPECT_EQ(get32(buf), 0x80000000u | (28 + 1000));
}

TEST(ReplyHeaders, TooSmallBufferFailsCleanly) {
  uint8_t buf[40];
  std::memset(buf, 0xcc, sizeof buf);
  for (size_t cap = 0; cap < 36; cap++) {
    xdr_out out(buf, cap);
    encode_prog_mismatch(out, 1, 3, 3);
    finish_record(out);
    EXPECT_FALSE(out.ok()) << cap;
    for (size_t i = cap; i < sizeof buf; i++) ASSERT_EQ(buf[i], 0xcc) << cap << " " << i;
  }
}

}  // namespace
