// The transaction service's own parts, alone: what the kernel's caches must be told of
// (cache_coherence.h) and how the last transactions ended (ending_history.h).
#include <gtest/gtest.h>

#include "fs/service/cache_coherence.h"
#include "fs/service/ending_history.h"

namespace ktmfs::fs {
namespace {

TEST(CacheCoherenceTest, TouchedWhileTheTransactionLives) {
  CacheCoherence c;
  const Guid a = Guid::Random(), b = Guid::Random();
  c.MarkTouched(a, 1, 10);
  c.MarkTouched(b, 1, 10);
  c.MarkTouched(a, 1, 10);  // once per transaction
  EXPECT_TRUE(c.IsTouched(1, 10));
  EXPECT_FALSE(c.IsTouched(1, 11));
  EXPECT_TRUE(c.TakeEnded(a).empty());
  EXPECT_TRUE(c.IsTouched(1, 10));  // b still has it
  c.TakeEnded(b);
  EXPECT_FALSE(c.IsTouched(1, 10));
}

TEST(CacheCoherenceTest, EndedObjectsSettleOnceHandedOn) {
  CacheCoherence c;
  const Guid a = Guid::Random(), b = Guid::Random();
  c.NoteEnded({a, true, 0, {fstx::ObjectId::Existing(1, 10), fstx::ObjectId::New(7)}, {}});
  c.NoteEnded({b, false, 0, {fstx::ObjectId::Existing(1, 10)}, {{"dir", "name"}}});
  EXPECT_TRUE(c.IsSettling(1, 10));
  EXPECT_FALSE(c.IsSettling(0, 0));  // a new object has nothing cached to settle
  auto from_a = c.TakeEnded(a);
  ASSERT_EQ(from_a.size(), 1u);
  EXPECT_TRUE(from_a[0].committed);
  EXPECT_EQ(from_a[0].objects.size(), 2u);
  EXPECT_TRUE(c.TakeEnded(a).empty());  // handed on once
  c.Settled(from_a);
  EXPECT_TRUE(c.IsSettling(1, 10));  // b's end has not been handed on yet
  auto from_b = c.TakeEnded(b);
  ASSERT_EQ(from_b.size(), 1u);
  EXPECT_EQ(from_b[0].entries.size(), 1u);
  c.Settled(from_b);
  EXPECT_FALSE(c.IsSettling(1, 10));
}

TxEnding Ended(const Guid& id, uid_t owner, pid_t pid, TxEnding::Outcome outcome,
               std::string reason = {}) {
  TxEnding e;
  e.id = id;
  e.owner = owner;
  e.pid = pid;
  e.outcome = outcome;
  e.reason = std::move(reason);
  e.when = std::chrono::steady_clock::now();
  return e;
}

TEST(EndingHistoryTest, SaysWhatBecameOfATransaction) {
  EndingHistory h;
  const Guid a = Guid::Random(), b = Guid::Random();
  h.Remember(Ended(a, 1000, 42, TxEnding::Outcome::kRolledBack, "its timeout expired"));
  h.Remember(Ended(b, 1000, 43, TxEnding::Outcome::kCommitted));
  EXPECT_EQ(h.SentenceFor(a),
            "transaction " + a.ToString() + " was rolled back: its timeout expired (0 s ago)");
  EXPECT_EQ(h.SentenceFor(b), "transaction " + b.ToString() + " was committed (0 s ago)");
  EXPECT_EQ(h.SentenceFor(Guid::Random()), "");
  EXPECT_TRUE(h.Knows(a));
  ASSERT_EQ(h.NewestFirst().size(), 2u);
  EXPECT_EQ(h.NewestFirst()[0].id, b);
}

TEST(EndingHistoryTest, ACallerHearsOfItsOwnProcessTreeOnly) {
  EndingHistory h;
  const Guid a = Guid::Random();
  h.Remember(Ended(a, 1000, 42, TxEnding::Outcome::kRolledBack));
  // The bound shell (42) is an ancestor of the asking txcommit (50).
  EXPECT_NE(h.SentenceForChain({50, 42, 1}, 1000), "");
  EXPECT_NE(h.SentenceForChain({50, 42}, 0), "");     // root sees every user's
  EXPECT_EQ(h.SentenceForChain({50, 42}, 1001), "");  // another user does not
  EXPECT_EQ(h.SentenceForChain({50, 44}, 1000), "");  // nor another process tree
}

TEST(EndingHistoryTest, KeepsTheLastFewHundred) {
  EndingHistory h;
  const Guid first = Guid::Random();
  h.Remember(Ended(first, 0, 1, TxEnding::Outcome::kCommitted));
  for (int i = 0; i < 300; i++)
    h.Remember(Ended(Guid::Random(), 0, 1, TxEnding::Outcome::kCommitted));
  EXPECT_FALSE(h.Knows(first));
  EXPECT_EQ(h.NewestFirst().size(), 256u);
}

}  // namespace
}  // namespace ktmfs::fs
