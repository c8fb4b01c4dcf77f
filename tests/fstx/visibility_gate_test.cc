#include "fs/tx/visibility_gate.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <utility>

#include "tests/fstx/stub_served_object.h"

namespace ktmfs::fstx {
namespace {

using Key = VisibilityGate::Key;
constexpr Key kA{8, 1}, kB{8, 2}, kC{8, 3};

// Spins until `done` holds; the thread under test gets there by itself, so no timing decides.
template <typename F>
void Until(F done) {
  while (!done())
    std::this_thread::yield();
}

TEST(VisibilityGate, ReadersAreCountedAndLetGo) {
  VisibilityGate g;
  {
    auto p = g.EnterFor(kA);
    EXPECT_TRUE(p.Add(kB));
    EXPECT_EQ(g.ReadersOf(kA), 1u);
    EXPECT_EQ(g.ReadersOf(kB), 1u);
    auto moved = std::move(p);
    EXPECT_EQ(g.ReadersOf(kA), 1u);
  }
  EXPECT_EQ(g.ReadersOf(kA), 0u);
  EXPECT_EQ(g.ReadersOf(kB), 0u);
}

TEST(VisibilityGate, CloseWaitsForItsObjectsReadersOnly) {
  VisibilityGate g;
  auto on_a = g.EnterFor(kA);
  auto on_b = g.EnterFor(kB);
  std::atomic<bool> closed{false};
  std::thread apply([&] {
    auto c = g.Close({kA});
    closed = true;
  });
  Until([&] { return g.IsClosed(kA); });
  // A new reader of A is refused while the apply waits; B is untouched.
  auto other = g.Enter();
  EXPECT_FALSE(other.Add(kA));
  EXPECT_TRUE(other.Add(kB));
  EXPECT_TRUE(other.Add(kC));
  on_b.Release();
  EXPECT_FALSE(closed);  // still waits for the reader of A
  on_a.Release();
  apply.join();
  EXPECT_TRUE(closed);
  EXPECT_FALSE(g.IsClosed(kA));  // opened again when the apply's hold ended
}

TEST(VisibilityGate, EnterForWaitsUntilTheApplyOpens) {
  VisibilityGate g;
  auto c = g.Close({kA, kB});
  std::atomic<bool> entered{false};
  std::thread reader([&] {
    auto p = g.EnterFor(kA);
    entered = true;
  });
  // An unrelated object is served while A is closed.
  auto p = g.EnterFor(kC);
  EXPECT_EQ(g.ReadersOf(kC), 1u);
  EXPECT_FALSE(entered);
  c.Open();
  reader.join();
  EXPECT_TRUE(entered);
}

TEST(VisibilityGate, ApplyOverlappedTellsAReaderToLookAgain) {
  VisibilityGate g;
  auto p = g.Enter();
  EXPECT_FALSE(p.ApplyOverlapped());
  { auto c = g.Close({kB}); }
  EXPECT_TRUE(p.ApplyOverlapped());
  auto q = g.Enter();
  EXPECT_FALSE(q.ApplyOverlapped());
}

// An apply already under way when the pass is made counts too: the reader may read its object
// half applied before the apply opens it again.
TEST(VisibilityGate, ApplyUnderWayAtEnterCounts) {
  VisibilityGate g;
  auto c = g.Close({kC});
  auto p = g.EnterFor(kA);
  c.Open();
  EXPECT_TRUE(p.Add(kC));
  EXPECT_TRUE(p.ApplyOverlapped());
}

TEST(VisibilityGate, ClosingNothingDisturbsNoReader) {
  VisibilityGate g;
  auto p = g.Enter();
  { auto c = g.Close({}); }
  EXPECT_FALSE(p.ApplyOverlapped());
}

TEST(VisibilityGate, AppliesOfTheSameObjectTakeTurns) {
  VisibilityGate g;
  auto first = g.Close({kA, kB});
  std::atomic<bool> second_closed{false};
  std::thread second([&] {
    auto c = g.Close({kB, kC});
    second_closed = true;
  });
  // The second apply closes nothing until the first is done: C stays open meanwhile.
  auto p = g.EnterFor(kC);
  p.Release();
  EXPECT_FALSE(second_closed);
  first.Open();
  second.join();
  EXPECT_TRUE(second_closed);
  EXPECT_FALSE(g.IsClosed(kB));
  EXPECT_FALSE(g.IsClosed(kC));
}

TEST(VisibilityGate, DuplicateKeysAreClosedOnce) {
  VisibilityGate g;
  {
    auto c = g.Close({kA, kA, kB});
    EXPECT_TRUE(g.IsClosed(kA));
  }
  EXPECT_FALSE(g.IsClosed(kA));
}

TEST(VisibilityGate, KeptObjectsStayClosedWhenTheRestOpens) {
  VisibilityGate g;
  EXPECT_FALSE(g.AnyClosed());
  auto c = g.Close({kA, kB});
  EXPECT_TRUE(g.AnyClosed());
  auto kept = c.Keep({kB, kC});  // C was never closed: not kept
  c.Open();
  EXPECT_FALSE(g.IsClosed(kA));
  EXPECT_TRUE(g.IsClosed(kB));
  EXPECT_FALSE(g.IsClosed(kC));
  EXPECT_TRUE(g.AnyClosed());
  // A reader of A goes on; one of B waits for the kept hold alone.
  auto on_a = g.EnterFor(kA);
  std::atomic<bool> in_b{false};
  std::thread reader([&] {
    auto p = g.EnterFor(kB);
    in_b = true;
  });
  // The reader cannot get past a closed B, whatever the scheduling: it is in Await or before.
  EXPECT_FALSE(in_b);
  kept.Open();
  reader.join();
  EXPECT_TRUE(in_b);
  EXPECT_FALSE(g.AnyClosed());
  // A pass made while the kept hold was open counts an apply under way.
  auto later = g.Enter();
  EXPECT_FALSE(later.ApplyOverlapped());
}

TEST(VisibilityGate, KeepingNothingOpensWithTheRest) {
  VisibilityGate g;
  auto c = g.Close({kA});
  auto kept = c.Keep({kB});
  c.Open();
  EXPECT_FALSE(g.AnyClosed());
  kept.Open();  // holds nothing: no apply to count off
  auto p = g.Enter();
  EXPECT_FALSE(p.ApplyOverlapped());
}

using Served = StubServedObject;

TEST(VisibilityGate, AKeptObjectIsServedToReadersWhoAsk) {
  VisibilityGate g;
  auto c = g.Close({kA, kB});
  auto kept = c.Keep({kA, kB}, {{kA, std::make_shared<Served>(42)}});
  c.Open();
  EXPECT_TRUE(g.IsServed(kA));
  EXPECT_FALSE(g.IsServed(kB));  // kept without anything to serve
  {
    auto p = g.Enter();
    EXPECT_FALSE(p.Add(kA));  // a reader that cannot use it still waits
    EXPECT_FALSE(p.AddOrServe(kB));
    ASSERT_TRUE(p.AddOrServe(kA));
    ASSERT_NE(p.ServedFrom(kA), nullptr);
    EXPECT_EQ(p.ServedFrom(kA)->Attributes().st_size, 42);
    EXPECT_EQ(p.ServedFrom(kB), nullptr);
    EXPECT_EQ(g.ReadersOf(kA), 1u);
  }
  auto q = g.EnterOrServe(kA);  // does not wait
  EXPECT_NE(q.ServedFrom(kA), nullptr);
  q.Release();
  kept.Open();
  EXPECT_FALSE(g.IsServed(kA));
  EXPECT_FALSE(g.AnyClosed());
  // Open again, it is read as itself.
  auto r = g.EnterOrServe(kA);
  EXPECT_EQ(r.ServedFrom(kA), nullptr);
}

// What serves a kept object reads the transaction's staging, which goes once apply is done: the
// hold opens only after the readers being served have let go.
// A reader that came while the object was closed, before apply let readers in, is served too.
TEST(VisibilityGate, AReaderWaitingForAnObjectIsServedOnceItIs) {
  VisibilityGate g;
  auto c = g.Close({kA});
  std::atomic<bool> served{false};
  std::thread reader([&] {
    auto p = g.EnterOrServe(kA);
    served = p.ServedFrom(kA) != nullptr;
  });
  Until([&] { return g.Waiting() == 1; });
  auto kept = c.Keep({kA}, {{kA, std::make_shared<Served>(1)}});
  c.Open();
  reader.join();  // before the kept hold opens
  EXPECT_TRUE(served);
  kept.Open();
}

TEST(VisibilityGate, AServingHoldOpensAfterItsReadersLetGo) {
  VisibilityGate g;
  auto c = g.Close({kA});
  auto kept = c.Keep({kA}, {{kA, std::make_shared<Served>(1)}});
  c.Open();
  auto reader = g.EnterOrServe(kA);
  ASSERT_NE(reader.ServedFrom(kA), nullptr);
  std::atomic<bool> opened{false};
  std::thread apply([&] {
    kept.Open();
    opened = true;
  });
  // No longer served to newcomers once the hold is opening; still closed until it has opened.
  Until([&] { return !g.IsServed(kA); });
  EXPECT_TRUE(g.IsClosed(kA));
  EXPECT_FALSE(opened);
  reader.Release();
  apply.join();
  EXPECT_TRUE(opened);
  EXPECT_FALSE(g.IsClosed(kA));
}

}  // namespace
}  // namespace ktmfs::fstx
