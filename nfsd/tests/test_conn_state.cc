// SPDX-License-Identifier: BSD-2-Clause
// The kcont transport's connection life cycle and send queue
// (conn_state.h): every legal edge and queue operation works, and in a
// Debug build each KC_ASSERT fires on a deliberately broken transition --
// the invariant's words are what the death test matches.
#include <gtest/gtest.h>

#include "conn_state.h"

using namespace kc::nfs;

namespace {

struct slot {
  int id = 0;
  slot *next = nullptr;
};

TEST(ConnState, TheLifeCycleHasExactlyItsEdges) {
  using cs = conn_state;
  const cs all[] = {cs::free, cs::open, cs::closing};
  int legal = 0;
  for (cs from : all)
    for (cs to : all) legal += conn_edge_ok(from, to);
  EXPECT_EQ(legal, 4);
  EXPECT_TRUE(conn_edge_ok(cs::free, cs::open));
  EXPECT_TRUE(conn_edge_ok(cs::open, cs::closing));
  EXPECT_TRUE(conn_edge_ok(cs::closing, cs::closing));
  EXPECT_TRUE(conn_edge_ok(cs::closing, cs::free));
  EXPECT_FALSE(conn_edge_ok(cs::open, cs::free));  // teardown only from closing
  cs st = cs::free;
  conn_state_move(&st, cs::open);
  conn_state_move(&st, cs::closing);
  conn_state_move(&st, cs::closing);
  conn_state_move(&st, cs::free);
  EXPECT_EQ(st, cs::free);
}

TEST(SendQueue, RepliesAreHandedAndEndInOrder) {
  slot s[4];
  send_queue<slot> q;
  for (auto &x : s) q.push(&x);
  EXPECT_EQ(q.oldest(), &s[0]);
  EXPECT_EQ(q.next_to_hand(), &s[0]);
  q.handed(&s[0]);
  q.handed(&s[1]);
  EXPECT_EQ(q.next_to_hand(), &s[2]);
  q.remove_handed(&s[1]);  // a cancelled send may end before an older one
  EXPECT_EQ(q.oldest(), &s[0]);
  q.remove_handed(&s[0]);
  EXPECT_EQ(q.oldest(), &s[2]);
  slot *waiting = q.take_waiting();
  EXPECT_EQ(waiting, &s[2]);
  EXPECT_EQ(waiting->next, &s[3]);
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.next_to_hand(), nullptr);
}

TEST(SendQueue, TakeWaitingKeepsTheHandedOnes) {
  slot s[3];
  send_queue<slot> q;
  for (auto &x : s) q.push(&x);
  q.handed(&s[0]);
  EXPECT_EQ(q.take_waiting(), &s[1]);
  EXPECT_EQ(q.oldest(), &s[0]);
  EXPECT_EQ(s[0].next, nullptr);
  s[1].next = s[2].next = nullptr;
  q.push(&s[1]);  // the queue's tail is the handed one again
  EXPECT_EQ(q.next_to_hand(), &s[1]);
  q.handed(&s[1]);
  q.remove_handed(&s[0]);
  q.remove_handed(&s[1]);
  EXPECT_TRUE(q.empty());
  q.reset();
}

#ifndef NDEBUG
class Broken : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

TEST_F(Broken, AnOpenConnectionCannotBeFreedWithoutClosing) {
  conn_state st = conn_state::open;
  EXPECT_DEATH(conn_state_move(&st, conn_state::free), "free -> open -> closing -> free");
}

TEST_F(Broken, AFreeConnectionCannotClose) {
  conn_state st = conn_state::free;
  EXPECT_DEATH(conn_state_move(&st, conn_state::closing), "free -> open -> closing -> free");
}

TEST_F(Broken, AClosingConnectionCannotReopen) {
  conn_state st = conn_state::closing;
  EXPECT_DEATH(conn_state_move(&st, conn_state::open), "free -> open -> closing -> free");
}

TEST_F(Broken, AReplyIsHandedOnlyInQueueOrder) {
  slot s[2];
  send_queue<slot> q;
  q.push(&s[0]);
  q.push(&s[1]);
  EXPECT_DEATH(q.handed(&s[1]), "handed to the socket in queue order");
}

TEST_F(Broken, AWaitingReplyCannotEndASend) {
  slot s[2];
  send_queue<slot> q;
  q.push(&s[0]);
  q.push(&s[1]);
  q.handed(&s[0]);
  EXPECT_DEATH(q.remove_handed(&s[1]), "only a reply handed to the socket ends its send");
}

TEST_F(Broken, AReplyIsQueuedOnce) {
  slot s[1];
  send_queue<slot> q;
  q.push(&s[0]);
  EXPECT_DEATH(q.push(&s[0]), "a reply is queued once");
}

TEST_F(Broken, AConnectionIsNotReusedWithRepliesQueued) {
  slot s[1];
  send_queue<slot> q;
  q.push(&s[0]);
  EXPECT_DEATH(q.reset(), "reused with no reply queued");
}
#endif

}  // namespace
