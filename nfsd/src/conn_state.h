// SPDX-License-Identifier: BSD-2-Clause
// conn_state.h -- a kcont-transport connection's life cycle and its send
// queue, as explicit states with asserted transitions.
//
// Life cycle of a connection object (model_kcont.cc):
//
//   free --(accepted or adopted: conn_setup)--> open
//   open --(peer closed, error, bad framing, timeout, eviction, a reply that
//           cannot be sent, shutdown)--> closing
//   closing --(another of those reasons)--> closing
//   closing --(nothing in flight: conn_reap, the one teardown)--> free
//
// `open` reads requests and sends replies; `closing` reads nothing more,
// lets the slots in flight (in the VFS, being received, being sent) finish
// and frees the object when the last one has; a `free` object has no socket
// and waits for the next connection (once its upcall continuation is idle).
// There is no edge from open straight to free: every way out goes through
// closing, so the teardown is written once.
//
// Send queue: the replies of a connection not yet the kernel's, oldest
// first.  [oldest, next) have been handed to the socket and end through
// their continuations; [next, tail] wait to be handed, in order.  A reply
// enters at the tail, is handed only as the next one, and leaves either
// when its send ended (remove_handed) or, never handed, when the connection
// stops sending (take_waiting).  KC_ASSERT checks each rule in Debug builds.
//
// Locking: none; one CPU's dispatcher owns a connection and its queue.
#pragma once

#include <cstdint>

#include "kcont/assert.h"

namespace kc::nfs {

enum class conn_state : uint8_t { free, open, closing };

// Whether `from -> to` is an edge of the life cycle above.
constexpr bool conn_edge_ok(conn_state from, conn_state to) {
  switch (from) {
    case conn_state::free:
      return to == conn_state::open;
    case conn_state::open:
      return to == conn_state::closing;
    case conn_state::closing:
      return to == conn_state::closing || to == conn_state::free;
  }
  return false;
}

// Moves *state to `next`; the edge must be one of the life cycle's.
inline void conn_state_move(conn_state *state, conn_state next) {
  KC_ASSERT(conn_edge_ok(*state, next),
            "a connection goes free -> open -> closing -> free, and only so");
  *state = next;
}

// An intrusive FIFO of Slot objects linked through Slot::next (see above).
template <class Slot>
class send_queue {
 public:
  bool empty() const { return head_ == nullptr; }
  Slot *oldest() const { return head_; }
  // The oldest reply not handed to the socket yet, or nullptr.
  Slot *next_to_hand() const { return next_; }

  // A finished reply, at the tail; it is in no queue.
  void push(Slot *s) {
    KC_ASSERT(s->next == nullptr && s != tail_, "a reply is queued once");
    if (tail_)
      tail_->next = s;
    else
      head_ = s;
    tail_ = s;
    if (!next_) next_ = s;
  }

  // s, the next reply to hand, was handed to the socket.
  void handed(Slot *s) {
    KC_ASSERT(s != nullptr && s == next_, "replies are handed to the socket in queue order");
    next_ = s->next;
  }

  // s was handed and its send ended (sent, or never to be): out of the
  // queue.  Handed sends end in order on one stream, but a cancelled one may
  // end before an older one, so s is looked for.
  void remove_handed(Slot *s) {
    Slot **pp = &head_;
    Slot *prev = nullptr;
    while (*pp && *pp != s && *pp != next_) {
      prev = *pp;
      pp = &(*pp)->next;
    }
    KC_ASSERT(*pp == s && s != next_, "only a reply handed to the socket ends its send");
    if (*pp != s) return;
    *pp = s->next;
    if (tail_ == s) tail_ = prev;
    s->next = nullptr;
  }

  // Detaches every reply not handed yet and returns them, linked through
  // next (oldest first): the connection sends nothing more.
  Slot *take_waiting() {
    Slot *waiting = next_;
    if (!waiting) return nullptr;
    Slot *last_handed = nullptr;
    for (Slot *s = head_; s != next_; s = s->next) last_handed = s;
    if (last_handed)
      last_handed->next = nullptr;
    else
      head_ = nullptr;
    tail_ = last_handed;
    next_ = nullptr;
    return waiting;
  }

  // Empties the queue (a connection object readied for a new socket).
  void reset() {
    KC_ASSERT(head_ == nullptr, "a connection is reused with no reply queued");
    head_ = tail_ = next_ = nullptr;
  }

 private:
  Slot *head_ = nullptr, *tail_ = nullptr, *next_ = nullptr;
};

}  // namespace kc::nfs
