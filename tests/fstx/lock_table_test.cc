#include "fs/tx/lock_table.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

namespace ktmfs::fstx {
namespace {

TEST(LockTable, FreeKeyIsAcquiredAndReentrant) {
  LockTable t;
  Guid a = Guid::Random();
  ObjectKey k{8, 100};
  ASSERT_TRUE(t.Acquire(a, k).ok());
  ASSERT_TRUE(t.Acquire(a, k).ok());
  EXPECT_EQ(t.Holder(k), a);
  EXPECT_EQ(t.CountHeldBy(a), 1u);
}

TEST(LockTable, OtherTransactionGetsBusyNamingHolder) {
  LockTable t;
  Guid a = Guid::Random(), b = Guid::Random();
  EntryKey e{8, 2, "file"};
  ASSERT_TRUE(t.Acquire(a, e).ok());
  Status s = t.Acquire(b, e);
  EXPECT_EQ(s.code(), EBUSY);
  EXPECT_NE(s.message().find(a.ToString()), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("8:2/file"), std::string::npos) << s.message();
  EXPECT_EQ(t.Holder(e), a);
}

TEST(LockTable, OutsideWritersAndTransactionsExcludeEachOther) {
  LockTable t;
  Guid a = Guid::Random();
  ObjectKey f{8, 100}, g{8, 101};
  // Two outside writers of f: they do not conflict with each other, and a transaction may not
  // take f until both are gone.
  ASSERT_TRUE(t.AddOutsideWriter(f).ok());
  ASSERT_TRUE(t.AddOutsideWriter(f).ok());
  Status s = t.Acquire(a, f, "dir/f");
  EXPECT_EQ(s.code(), EBUSY);
  EXPECT_NE(s.message().find("open for writing outside transactions"), std::string::npos)
      << s.message();
  t.RemoveOutsideWriter(f);
  EXPECT_EQ(t.Acquire(a, f).code(), EBUSY);
  t.RemoveOutsideWriter(f);
  EXPECT_TRUE(t.Acquire(a, f).ok());
  // The other way: a held object takes no outside writer, naming its holder.
  ASSERT_TRUE(t.Acquire(a, g).ok());
  s = t.AddOutsideWriter(g);
  EXPECT_EQ(s.code(), EBUSY);
  EXPECT_NE(s.message().find(a.ToString()), std::string::npos) << s.message();
  t.ReleaseAll(a);
  EXPECT_TRUE(t.AddOutsideWriter(g).ok());
  EXPECT_TRUE(t.AddOutsideWriter(f).ok());
}

// A writer's hold outlives its release while the file is still open for writing elsewhere (a
// shared mapping made through a passed-through file keeps writing after close(2)).
TEST(LockTable, LingeringOutsideWriterHoldsUntilTheFileIsNoLongerOpenForWriting) {
  char path[] = "/tmp/lock_table_test_XXXXXX";
  int still = mkstemp(path);  // another open for writing, as a mapping's file would be
  ASSERT_GE(still, 0);
  int probe = open(path, O_RDONLY | O_CLOEXEC);
  unlink(path);
  ASSERT_GE(probe, 0);
  EXPECT_TRUE(StillOpenForWriting(probe));
  LockTable t;
  int asked = 0;
  t.SetWriterProbe([&](const ObjectKey&) {
    ++asked;
    return StillOpenForWriting(probe);
  });
  Guid a = Guid::Random();
  ObjectKey f{8, 100}, g{8, 101};
  ASSERT_TRUE(t.AddOutsideWriter(f).ok());
  t.RemoveOutsideWriter(f, /*still_open=*/true);
  EXPECT_TRUE(t.HasOutsideWriter(f));
  Status s = t.Acquire(a, f);
  EXPECT_EQ(s.code(), EBUSY);
  EXPECT_NE(s.message().find("open for writing outside transactions"), std::string::npos);
  close(still);
  EXPECT_FALSE(StillOpenForWriting(probe));
  EXPECT_FALSE(t.HasOutsideWriter(f));
  EXPECT_TRUE(t.Acquire(a, f).ok());
  // A release with nothing else open leaves nothing to ask about.
  const int asked_before = asked;
  ASSERT_TRUE(t.AddOutsideWriter(g).ok());
  t.RemoveOutsideWriter(g);
  EXPECT_TRUE(t.Acquire(a, g).ok());
  EXPECT_EQ(asked, asked_before);
  close(probe);
}

TEST(LockTable, ObjectsAndEntriesAreDistinctKeys) {
  LockTable t;
  Guid a = Guid::Random(), b = Guid::Random();
  ASSERT_TRUE(t.Acquire(a, ObjectKey{8, 2}).ok());
  ASSERT_TRUE(t.Acquire(b, EntryKey{8, 2, "x"}).ok());
  ASSERT_TRUE(t.Acquire(b, EntryKey{8, 2, "y"}).ok());
  EXPECT_EQ(t.Acquire(a, EntryKey{8, 2, "y"}).code(), EBUSY);
  EXPECT_EQ(t.CountHeldBy(a), 1u);
  EXPECT_EQ(t.CountHeldBy(b), 2u);
}

TEST(LockTable, ReleaseAllFreesOnlyThatTransaction) {
  LockTable t;
  Guid a = Guid::Random(), b = Guid::Random();
  ASSERT_TRUE(t.Acquire(a, ObjectKey{1, 1}).ok());
  ASSERT_TRUE(t.Acquire(a, EntryKey{1, 1, "n"}).ok());
  ASSERT_TRUE(t.Acquire(b, ObjectKey{1, 2}).ok());
  EXPECT_EQ(t.ReleaseAll(a), 2u);
  EXPECT_EQ(t.ReleaseAll(a), 0u);
  EXPECT_FALSE(t.Holder(ObjectKey{1, 1}).has_value());
  EXPECT_EQ(t.Holder(ObjectKey{1, 2}), b);
  EXPECT_EQ(t.CountHeldBy(a), 0u);
  EXPECT_TRUE(t.Acquire(b, ObjectKey{1, 1}).ok());
  EXPECT_EQ(t.size(), 2u);
}

TEST(LockTable, NameHeldCoversEverythingBelowIt) {
  LockTable t;
  Guid mover = Guid::Random(), other = Guid::Random();
  // The mover renamed or removed directory "d" (its entry in the root, inode 1).
  ASSERT_TRUE(t.Acquire(mover, EntryKey{1, 1, "d"}, "d").ok());
  // Below it, nobody else may change an object or a name, at any depth.
  Status s = t.Acquire(other, ObjectKey{1, 5}, "d/x");
  EXPECT_EQ(s.code(), EBUSY);
  EXPECT_NE(s.message().find(mover.ToString()), std::string::npos) << s.message();
  EXPECT_EQ(t.Acquire(other, EntryKey{1, 2, "z"}, "d/z").code(), EBUSY);
  EXPECT_EQ(t.Acquire(other, EntryKey{1, 3, "z"}, "d/sub/z").code(), EBUSY);
  EXPECT_TRUE(t.NameHeldAbove("d/sub/z", other));
  EXPECT_FALSE(t.NameHeldAbove("d/sub/z", mover));
  // Beside it, and for the mover itself, everything goes.
  EXPECT_TRUE(t.Acquire(other, EntryKey{1, 1, "d2"}, "d2").ok());
  EXPECT_TRUE(t.Acquire(other, ObjectKey{1, 6}, "d-x/f").ok());
  EXPECT_TRUE(t.Acquire(mover, ObjectKey{1, 5}, "d/x").ok());
  // The refused ones left nothing behind.
  EXPECT_EQ(t.CountHeldBy(other), 2u);
}

TEST(LockTable, NameCannotChangeWhileAnotherHoldsBelowIt) {
  LockTable t;
  Guid writer = Guid::Random(), mover = Guid::Random();
  ASSERT_TRUE(t.Acquire(writer, EntryKey{1, 2, "new"}, "d/sub/new").ok());
  EXPECT_EQ(t.Acquire(mover, EntryKey{1, 1, "d"}, "d").code(), EBUSY);
  EXPECT_EQ(t.Acquire(mover, EntryKey{1, 3, "sub"}, "d/sub").code(), EBUSY);
  // The object at the same path is the directory itself: changing its mode is no move.
  EXPECT_TRUE(t.Acquire(mover, ObjectKey{1, 3}, "d/sub").ok());
  // Names that only share a prefix of characters are not below.
  EXPECT_TRUE(t.Acquire(mover, EntryKey{1, 1, "d-x"}, "d-x").ok());
  EXPECT_TRUE(t.Acquire(mover, EntryKey{1, 1, "d.x"}, "d.x").ok());
  EXPECT_TRUE(t.HeldUnder("d", mover));
  EXPECT_FALSE(t.HeldUnder("d/sub/new", writer));
  // Once the writer ends, the move goes through.
  t.ReleaseAll(writer);
  EXPECT_FALSE(t.HeldUnder("d", mover));
  EXPECT_TRUE(t.Acquire(mover, EntryKey{1, 1, "d"}, "d").ok());
}

TEST(LockTable, ObjectReachedByASecondNameIsHeldThereToo) {
  // A file with names "f" and "d/sub/e": a transaction that wrote it as "f" and then links
  // "d/sub/e" names it in its ops at both, so "d/sub" may not move under it.
  LockTable t;
  Guid tx = Guid::Random(), other = Guid::Random();
  ObjectKey file{8, 50};
  ASSERT_TRUE(t.Acquire(tx, file, "f").ok());
  EXPECT_FALSE(t.HeldUnder("d/sub", other));
  ASSERT_TRUE(t.Acquire(tx, file, "d/sub/e").ok());
  ASSERT_TRUE(t.Acquire(tx, file, "d/sub/e").ok());  // once is enough
  EXPECT_EQ(t.CountHeldBy(tx), 1u);
  EXPECT_TRUE(t.HeldUnder("d/sub", other));
  EXPECT_TRUE(t.HeldUnder("d", other));
  // The second name lies below a directory another transaction removes: refused, and the
  // first name stays held alone.
  ASSERT_TRUE(t.Acquire(other, EntryKey{8, 3, "gone"}, "gone").ok());
  EXPECT_EQ(t.Acquire(tx, file, "gone/e").code(), EBUSY);
  EXPECT_FALSE(t.HeldUnder("gone", other));
  EXPECT_EQ(t.ReleaseAll(tx), 1u);
  EXPECT_FALSE(t.HeldUnder("d", other));
  EXPECT_FALSE(t.HeldUnder("f", other));
  EXPECT_EQ(t.ReleaseAll(other), 1u);
  EXPECT_EQ(t.size(), 0u);
}

TEST(LockTable, RaceForADirectoryAndItsContentsHasOneWinner) {
  for (int round = 0; round < 200; ++round) {
    LockTable t;
    Guid mover = Guid::Random(), writer = Guid::Random();
    Status moved, wrote;
    std::thread a([&] { moved = t.Acquire(mover, EntryKey{1, 1, "d"}, "d"); });
    std::thread b([&] { wrote = t.Acquire(writer, ObjectKey{1, 9}, "d/f"); });
    a.join();
    b.join();
    EXPECT_NE(moved.ok(), wrote.ok()) << "round " << round;
  }
}

// Many transactions race for the same keys: each key must end up with exactly one winner,
// and every loser must have been told EBUSY.
TEST(LockTable, ConcurrentAcquireHasExactlyOneWinnerPerKey) {
  LockTable t;
  constexpr int kThreads = 8, kKeys = 200;
  std::vector<Guid> txs;
  for (int i = 0; i < kThreads; ++i)
    txs.push_back(Guid::Random());
  std::atomic<int> wins{0}, busy{0}, other{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      for (int k = 0; k < kKeys; ++k) {
        Status s = t.Acquire(txs[i], ObjectKey{1, static_cast<uint64_t>(k)});
        if (s.ok())
          ++wins;
        else if (s.code() == EBUSY)
          ++busy;
        else
          ++other;
      }
    });
  }
  for (auto& th : threads)
    th.join();
  EXPECT_EQ(wins.load(), kKeys);
  EXPECT_EQ(busy.load(), kKeys * (kThreads - 1));
  EXPECT_EQ(other.load(), 0);
  size_t total = 0;
  for (const auto& g : txs)
    total += t.CountHeldBy(g);
  EXPECT_EQ(total, static_cast<size_t>(kKeys));
  // Release concurrently with acquires by a fresh transaction: afterwards the table holds only
  // what the fresh one won, and its count matches.
  Guid fresh = Guid::Random();
  std::vector<std::thread> more;
  for (const auto& g : txs)
    more.emplace_back([&, g] { t.ReleaseAll(g); });
  more.emplace_back([&] {
    for (int k = 0; k < kKeys; ++k)
      (void)t.Acquire(fresh, ObjectKey{1, static_cast<uint64_t>(k)});
  });
  for (auto& th : more)
    th.join();
  EXPECT_EQ(t.size(), t.CountHeldBy(fresh));
}

// A change refused halfway through its locks gives back what it took (Journal::Undo), and
// only that: a key its transaction held before, and that key's earlier paths, stay held.
TEST(LockTable, AJournalUndoesOnlyWhatItRecorded) {
  LockTable t;
  const Guid a = Guid::Random(), b = Guid::Random();
  const ObjectKey before{8, 1};
  const EntryKey src{8, 2, "e"}, dst{8, 3, "z"};
  const ObjectKey object{8, 4};
  ASSERT_TRUE(t.Acquire(a, before, "x/kept").ok());
  ASSERT_TRUE(t.Acquire(b, dst, "b/z").ok());
  {
    LockTable::Journal journal(t, a);
    ASSERT_TRUE(t.Acquire(a, src, "a/e").ok());
    ASSERT_TRUE(t.Acquire(a, object, "a/e").ok());
    ASSERT_TRUE(t.Acquire(a, before, "x/second").ok());  // held already: a new path only
    ASSERT_TRUE(t.Acquire(b, ObjectKey{8, 9}).ok());     // another transaction's: not recorded
    EXPECT_EQ(t.Acquire(a, dst, "b/z").code(), EBUSY);
    journal.Undo();
  }
  EXPECT_EQ(t.CountHeldBy(a), 1u);
  EXPECT_EQ(t.Holder(before), a);
  EXPECT_FALSE(t.Holder(src).has_value());
  EXPECT_FALSE(t.Holder(object).has_value());
  EXPECT_TRUE(t.HeldUnder("x/kept", b));
  EXPECT_FALSE(t.HeldUnder("x/second", b));
  EXPECT_FALSE(t.HeldUnder("a", b));
  EXPECT_EQ(t.Holder(ObjectKey{8, 9}), b);
  // Without Undo, what was taken stays.
  {
    LockTable::Journal journal(t, a);
    ASSERT_TRUE(t.Acquire(a, src, "a/e").ok());
  }
  EXPECT_EQ(t.Holder(src), a);
  EXPECT_EQ(t.ReleaseAll(a), 2u);
}

// A key one change of a transaction took and may still give back, which another change of the
// same transaction takes too (another thread, say a write-back), is the other's as well: the
// first change, refused, leaves it held, and says so by not naming it to Undo's callback.
TEST(LockTable, AKeyAnotherChangeTookIsNotGivenBack) {
  LockTable t;
  const Guid a = Guid::Random(), b = Guid::Random();
  const ObjectKey shared{8, 1}, own{8, 2}, by_path{8, 3}, others{8, 4};
  std::vector<LockKey> released;
  {
    LockTable::Journal journal(t, a);
    ASSERT_TRUE(t.Acquire(a, shared).ok());
    ASSERT_TRUE(t.Acquire(a, own).ok());
    ASSERT_TRUE(t.Acquire(a, by_path, "d/f").ok());
    ASSERT_TRUE(t.Acquire(b, others).ok());
    std::thread other([&] {
      LockTable::Journal theirs(t, a);
      EXPECT_TRUE(t.TakeAgain(a, shared));
      EXPECT_TRUE(t.Acquire(a, by_path, "d/f").ok());  // held there already
      EXPECT_FALSE(t.TakeAgain(a, others));            // b's
      EXPECT_FALSE(t.TakeAgain(a, ObjectKey{8, 9}));   // nobody's
      EXPECT_TRUE(t.TakeAgain(b, others));             // another transaction's journal: no matter
    });
    other.join();
    journal.Undo([&](const LockKey& k) { released.push_back(k); });
  }
  EXPECT_EQ(released, std::vector<LockKey>{own});
  EXPECT_EQ(t.Holder(shared), a);
  EXPECT_EQ(t.Holder(by_path), a);
  EXPECT_TRUE(t.HeldUnder("d", b));
  EXPECT_FALSE(t.Holder(own).has_value());
  EXPECT_EQ(t.Holder(others), b);
}

}  // namespace
}  // namespace ktmfs::fstx
