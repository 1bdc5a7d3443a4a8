// SPDX-License-Identifier: BSD-2-Clause
// rpc.h -- ONC RPC v2 (RFC 5531) over TCP: record marking, call headers,
// credentials, and reply headers.
//
// Model: a TCP stream carries records, each made of fragments that start
// with a 4-byte mark (top bit: last fragment; low 31 bits: length).  The
// record_reader reassembles one record at a time straight into a buffer the
// caller supplies (normally a request slot's buffer): it says where the next
// bytes should go (`want`) -- a fragment header or the body of the current
// fragment -- and the caller reads from its socket right there, so a record
// is copied once, from the socket into the slot, and never again.  A record
// larger than the buffer (or the configured maximum) is an error: the
// connection must be closed, since the stream cannot be resynchronised.
//
// decode_call parses the call header and the credential (AUTH_NONE and
// AUTH_SYS; any other flavour is reported so the caller can answer
// AUTH_ERROR).  The encode_* helpers write reply headers; with
// `with_mark` they reserve the record mark, which finish_record fills in.
//
// Rules: no allocation, no locking.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kcont/nfsd/xdr.h"

namespace kc::nfs {

// RPC constants (RFC 5531).
enum : uint32_t { RPC_CALL = 0, RPC_REPLY = 1 };
enum : uint32_t { MSG_ACCEPTED = 0, MSG_DENIED = 1 };
enum accept_stat : uint32_t {
  SUCCESS = 0,
  PROG_UNAVAIL = 1,
  PROG_MISMATCH = 2,
  PROC_UNAVAIL = 3,
  GARBAGE_ARGS = 4,
  SYSTEM_ERR = 5,
};
enum reject_stat : uint32_t { RPC_MISMATCH = 0, AUTH_ERROR = 1 };
enum auth_stat : uint32_t {
  AUTH_OK = 0,
  AUTH_BADCRED = 1,
  AUTH_REJECTEDCRED = 2,
  AUTH_BADVERF = 3,
  AUTH_REJECTEDVERF = 4,
  AUTH_TOOWEAK = 5,
};
enum : uint32_t { AUTH_NONE = 0, AUTH_SYS = 1 };

inline constexpr uint32_t MAX_AUTH_BYTES = 400;
inline constexpr uint32_t MAX_GIDS = 16;

class record_reader {
 public:
  enum result { more, record, too_big, bad_fragment };

  // Starts a record in buf (cap bytes).  Pending bytes of a fragment header
  // already read are kept.
  void begin(uint8_t *buf, size_t cap) {
    buf_ = buf;
    cap_ = cap;
    len_ = 0;
  }
  bool started() const { return buf_ != nullptr; }
  // Where the next bytes of the stream belong, and at most how many.
  uint8_t *want(size_t *n) {
    if (in_header_) {
      *n = 4 - hdr_have_;
      return hdr_ + hdr_have_;
    }
    *n = frag_left_;
    return buf_ + len_;
  }
  // n bytes arrived where want() said.  Returns `record` when a whole record
  // sits in the buffer (its length is length()); the caller then calls
  // begin() with a new buffer before reading more.
  result commit(size_t n);
  size_t length() const { return len_; }
  // Bytes the record will hold once the fragment being read is in: what
  // the buffer must have room for before the next want().
  size_t announced() const { return len_ + (in_header_ ? 0 : frag_left_); }
  // True when no partial record or header is buffered.
  bool idle() const { return in_header_ && hdr_have_ == 0 && len_ == 0; }

 private:
  uint8_t *buf_ = nullptr;
  size_t cap_ = 0;
  size_t len_ = 0;
  uint8_t hdr_[4] = {};
  uint32_t hdr_have_ = 0;
  uint32_t frag_left_ = 0;
  bool last_ = false;
  bool in_header_ = true;
};

struct auth_sys_cred {
  uint32_t stamp = 0;
  bytes_view machine;
  uint32_t uid = 0, gid = 0;
  uint32_t ngids = 0;
  uint32_t gids[MAX_GIDS] = {};
};

struct rpc_call {
  uint32_t xid = 0;
  uint32_t rpcvers = 0, prog = 0, vers = 0, proc = 0;
  uint32_t flavor = AUTH_NONE;
  auth_sys_cred sys;
};

enum class call_status {
  ok,
  not_a_call,    // a REPLY or garbage message type: drop it
  garbage,       // header cut short or malformed: close the connection
  rpc_mismatch,  // rpcvers != 2: MSG_DENIED / RPC_MISMATCH
  bad_cred,      // unknown flavour or malformed credential: AUTH_ERROR
};

// Parses the call header; on ok, `in` is positioned at the procedure's
// arguments.  call->xid is valid whenever at least 4 bytes were present.
call_status decode_call(xdr_in &in, rpc_call *call);

// Reply headers.  `out` is positioned at the start of the record; with a
// record mark, 4 bytes are reserved first (fill them with finish_record).
void encode_accepted(xdr_out &out, uint32_t xid, accept_stat st, bool with_mark = true);
void encode_prog_mismatch(xdr_out &out, uint32_t xid, uint32_t low, uint32_t high,
                          bool with_mark = true);
void encode_rpc_mismatch(xdr_out &out, uint32_t xid, bool with_mark = true);
void encode_auth_error(xdr_out &out, uint32_t xid, auth_stat why, bool with_mark = true);

// Writes the record mark for a single-fragment record whose body is
// out.size() - 4 bytes plus `extra` bytes sent separately (sendfile).
void finish_record(xdr_out &out, size_t extra = 0);

}  // namespace kc::nfs
