#include "fs/tx/apply_plan.h"

#include <gtest/gtest.h>

namespace ktmfs::fstx {
namespace {

const ObjectId kDir = ObjectId::Existing(8, 10);
const ObjectId kFile = ObjectId::Existing(8, 11);
const ObjectId kOther = ObjectId::Existing(8, 12);

TEST(ApplyPlan, OriginalPathIsTranslatedThroughRenamedParents) {
  std::vector<Op> ops = {
      {.kind = OpKind::kRename, .object = kDir, .path = "dir1", .path2 = "moved"},
      {.kind = OpKind::kSetattr,
       .object = kFile,
       .path = "moved/c.txt",
       .mode = 0600,
       .set_mask = kSetMode},
  };
  auto plan = PlanApply(ops);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const PlannedObject* f = plan->Find(kFile);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->original, "dir1/c.txt");
  EXPECT_EQ(f->finals, std::vector<std::string>{"moved/c.txt"});
  const PlannedObject* d = plan->Find(kDir);
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->original, "dir1");
  EXPECT_TRUE(d->parks());
  EXPECT_EQ(d->canonical, "moved");
  ASSERT_EQ(plan->content_ops.size(), 1u);
}

TEST(ApplyPlan, NewObjectRemovedAgainIsNeverPlaced) {
  std::vector<Op> ops = {
      {.kind = OpKind::kCreate, .object = ObjectId::New(1), .path = "tmp"},
      {.kind = OpKind::kUnlink, .object = ObjectId::New(1), .path = "tmp"},
  };
  auto plan = PlanApply(ops);
  ASSERT_TRUE(plan.ok());
  const PlannedObject* o = plan->Find(ObjectId::New(1));
  ASSERT_NE(o, nullptr);
  EXPECT_TRUE(o->deleted());
  EXPECT_FALSE(o->parks());
}

TEST(ApplyPlan, LinkKeepsOriginalAsCanonical) {
  std::vector<Op> ops = {
      {.kind = OpKind::kLink, .object = kFile, .path = "a", .path2 = "sub/b"},
  };
  auto plan = PlanApply(ops);
  ASSERT_TRUE(plan.ok());
  const PlannedObject* o = plan->Find(kFile);
  EXPECT_EQ(o->finals, (std::vector<std::string>{"a", "sub/b"}));
  EXPECT_EQ(o->canonical, "a");
  EXPECT_FALSE(o->parks());
}

TEST(ApplyPlan, ExchangeSwapsBothNames) {
  std::vector<Op> ops = {
      {.kind = OpKind::kRename,
       .object = kFile,
       .path = "x",
       .path2 = "y",
       .replaced = kOther,
       .flags = 2 /* RENAME_EXCHANGE */},
  };
  auto plan = PlanApply(ops);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->Find(kFile)->finals, std::vector<std::string>{"y"});
  EXPECT_EQ(plan->Find(kOther)->finals, std::vector<std::string>{"x"});
  EXPECT_TRUE(plan->Find(kFile)->parks());
  EXPECT_TRUE(plan->Find(kOther)->parks());
}

TEST(ApplyPlan, ReplacedTargetIsDeleted) {
  std::vector<Op> ops = {
      {.kind = OpKind::kRename, .object = kFile, .path = "x", .path2 = "y", .replaced = kOther},
  };
  auto plan = PlanApply(ops);
  ASSERT_TRUE(plan.ok());
  EXPECT_TRUE(plan->Find(kOther)->deleted());
  EXPECT_EQ(plan->Find(kOther)->original, "y");
}

// A change through a descriptor after the transaction removed, replaced or relinked the name
// the file was opened by: its record still gives that name.
TEST(ApplyPlan, ContentAfterTheNameWentGoesToTheObject) {
  auto removed = PlanApply({{.kind = OpKind::kUnlink, .object = kFile, .path = "a"},
                            {.kind = OpKind::kWriteData, .object = kFile, .path = "a"}});
  ASSERT_TRUE(removed.ok()) << removed.status().ToString();
  EXPECT_TRUE(removed->Find(kFile)->deleted());
  EXPECT_EQ(removed->content_ops.size(), 1u);
  auto replaced = PlanApply(
      {{.kind = OpKind::kRename, .object = kOther, .path = "b", .path2 = "a", .replaced = kFile},
       {.kind = OpKind::kSetattr, .object = kFile, .path = "a", .set_mask = kSetMode}});
  ASSERT_TRUE(replaced.ok()) << replaced.status().ToString();
  EXPECT_TRUE(replaced->Find(kFile)->deleted());
  EXPECT_EQ(replaced->Find(kOther)->canonical, "a");
  auto relinked = PlanApply({{.kind = OpKind::kLink, .object = kFile, .path = "a", .path2 = "g"},
                             {.kind = OpKind::kUnlink, .object = kFile, .path = "a"},
                             {.kind = OpKind::kWriteData, .object = kFile, .path = "a"}});
  ASSERT_TRUE(relinked.ok()) << relinked.status().ToString();
  EXPECT_EQ(relinked->Find(kFile)->canonical, "g");
}

TEST(ApplyPlan, InconsistentOrUnsupportedOpsAreRefused) {
  // An op on a name the transaction removed, naming a different object.
  EXPECT_EQ(PlanApply({{.kind = OpKind::kUnlink, .object = kFile, .path = "a"},
                       {.kind = OpKind::kSetattr, .object = kOther, .path = "a"}})
                .status()
                .code(),
            EINVAL);
  // A second pre-existing name of one object.
  EXPECT_EQ(PlanApply({{.kind = OpKind::kSetattr, .object = kFile, .path = "a"},
                       {.kind = OpKind::kSetattr, .object = kFile, .path = "b"}})
                .status()
                .code(),
            EINVAL);
  // An untouched name under a directory the transaction created.
  EXPECT_EQ(PlanApply({{.kind = OpKind::kMkdir, .object = ObjectId::New(1), .path = "n"},
                       {.kind = OpKind::kSetattr, .object = kFile, .path = "n/x"}})
                .status()
                .code(),
            EINVAL);
}

TEST(NamesBeforeApply, FollowMovedDirectoriesBack) {
  auto obj = [](uint64_t ino, std::string original, std::vector<std::string> finals) {
    PlannedObject o;
    o.id = ObjectId::Existing(1, ino);
    o.original = std::move(original);
    o.finals = std::move(finals);
    return o;
  };
  ApplyPlan plan;
  plan.objects = {obj(2, "p", {"q"}), obj(3, "p/s", {"q/s/t"}), obj(4, "p/i", {}),
                  obj(5, "gone", {})};
  const NamesBeforeApply before(plan);
  EXPECT_EQ(before.Of("q/x"), "p/x");
  EXPECT_EQ(before.Of("q/s/t/y"), "p/s/y");  // the deepest move carries it
  EXPECT_EQ(before.Of("r"), "r");
  EXPECT_EQ(before.Of("q/i"), std::nullopt);  // p/i is removed: the name is free
  EXPECT_EQ(before.Of("gone/new"), std::nullopt);
  EXPECT_EQ(before.Of("p"), std::nullopt);  // p moves away
  EXPECT_EQ(before.Of("q"), "p");
  EXPECT_TRUE(before.Vacated("p/i"));
  EXPECT_FALSE(before.Vacated("p/x"));
}

}  // namespace
}  // namespace ktmfs::fstx
