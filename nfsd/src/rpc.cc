// SPDX-License-Identifier: BSD-2-Clause
// rpc.cc -- ONC RPC record marking, call decoding and reply headers.
// See rpc.h for the model.  Everything here is pure computation on memory
// the caller owns.
#include "kcont/nfsd/rpc.h"

namespace kc::nfs {

record_reader::result record_reader::commit(size_t n) {
  if (in_header_) {
    hdr_have_ += uint32_t(n);
    if (hdr_have_ < 4) return more;
    uint32_t mark =
        uint32_t(hdr_[0]) << 24 | uint32_t(hdr_[1]) << 16 | uint32_t(hdr_[2]) << 8 | hdr_[3];
    hdr_have_ = 0;
    last_ = (mark & 0x80000000u) != 0;
    frag_left_ = mark & 0x7fffffffu;
    if (frag_left_ > cap_ - len_) return too_big;
    in_header_ = false;
    // An empty last fragment ends the record; an empty middle one is legal.
  } else {
    frag_left_ -= uint32_t(n);
    len_ += n;
  }
  if (frag_left_ > 0) return more;
  in_header_ = true;
  if (!last_) return more;
  if (len_ == 0) return bad_fragment;  // a record must hold at least an xid
  return record;
}

namespace {

bool skip_opaque_auth(xdr_in &in) {
  in.u32();
  in.var(MAX_AUTH_BYTES);
  return in.ok();
}

}  // namespace

call_status decode_call(xdr_in &in, rpc_call *c) {
  c->xid = in.u32();
  uint32_t type = in.u32();
  if (!in.ok()) return call_status::garbage;
  if (type != RPC_CALL) return call_status::not_a_call;
  c->rpcvers = in.u32();
  c->prog = in.u32();
  c->vers = in.u32();
  c->proc = in.u32();
  if (!in.ok()) return call_status::garbage;
  if (c->rpcvers != 2) return call_status::rpc_mismatch;

  c->flavor = in.u32();
  bytes_view body = in.var(MAX_AUTH_BYTES);
  if (!in.ok()) return call_status::garbage;
  bool cred_ok = true;
  if (c->flavor == AUTH_SYS) {
    xdr_in cred(body.data, body.len);
    c->sys.stamp = cred.u32();
    c->sys.machine = cred.var(255);
    c->sys.uid = cred.u32();
    c->sys.gid = cred.u32();
    c->sys.ngids = cred.u32();
    if (c->sys.ngids > MAX_GIDS) {
      cred_ok = false;
    } else {
      for (uint32_t i = 0; i < c->sys.ngids; i++) c->sys.gids[i] = cred.u32();
    }
    if (!cred.ok() || cred.left() != 0) cred_ok = false;
  } else if (c->flavor != AUTH_NONE) {
    cred_ok = false;
  }
  if (!skip_opaque_auth(in)) return call_status::garbage;  // the verifier
  return cred_ok ? call_status::ok : call_status::bad_cred;
}

namespace {

void header(xdr_out &out, uint32_t xid, uint32_t reply_stat, bool with_mark) {
  if (with_mark) out.reserve();
  out.u32(xid);
  out.u32(RPC_REPLY);
  out.u32(reply_stat);
}

}  // namespace

void encode_accepted(xdr_out &out, uint32_t xid, accept_stat st, bool with_mark) {
  header(out, xid, MSG_ACCEPTED, with_mark);
  out.u32(AUTH_NONE);  // verifier
  out.u32(0);
  out.u32(st);
}

void encode_prog_mismatch(xdr_out &out, uint32_t xid, uint32_t low, uint32_t high, bool with_mark) {
  encode_accepted(out, xid, PROG_MISMATCH, with_mark);
  out.u32(low);
  out.u32(high);
}

void encode_rpc_mismatch(xdr_out &out, uint32_t xid, bool with_mark) {
  header(out, xid, MSG_DENIED, with_mark);
  out.u32(RPC_MISMATCH);
  out.u32(2);
  out.u32(2);
}

void encode_auth_error(xdr_out &out, uint32_t xid, auth_stat why, bool with_mark) {
  header(out, xid, MSG_DENIED, with_mark);
  out.u32(AUTH_ERROR);
  out.u32(why);
}

void finish_record(xdr_out &out, size_t extra) {
  out.patch(0, 0x80000000u | uint32_t(out.size() - 4 + extra));
}

}  // namespace kc::nfs
