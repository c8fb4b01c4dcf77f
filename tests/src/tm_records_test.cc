// The TM's on-disk records: round trips, and damaged payloads become errors naming the record.
#include "src/tm_records.h"

#include <gtest/gtest.h>

namespace ktmfs::tm {
namespace {

log::Record AsRecord(TmRecordType type, std::vector<std::byte> payload) {
  log::Record r;
  r.lsn = 0x1234;
  r.type = static_cast<uint16_t>(type);
  r.payload = std::move(payload);
  return r;
}

TxImage SampleTx() {
  TxImage tx;
  tx.id = Guid::Random();
  tx.owner = 1000;
  tx.description = "deploy";
  tx.decision = Decision::kCommit;
  tx.enlistments.push_back({Guid::Random(), "data", {std::byte{1}, std::byte{2}}});
  tx.enlistments.push_back({Guid::Random(), "conf", {}});
  return tx;
}

TEST(TmRecordsTest, CommitRoundTrips) {
  TxImage tx = SampleTx();
  auto r = DecodeTmRecord(AsRecord(TmRecordType::kCommit, EncodeCommit(tx)), "tm");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->tx.id, tx.id);
  EXPECT_EQ(r->tx.owner, 1000u);
  EXPECT_EQ(r->tx.description, "deploy");
  ASSERT_EQ(r->tx.enlistments.size(), 2u);
  EXPECT_EQ(r->tx.enlistments[0].rm_name, "data");
  EXPECT_EQ(r->tx.enlistments[0].info, tx.enlistments[0].info);
}

TEST(TmRecordsTest, EnlistAndInfoRoundTrip) {
  TxImage tx = SampleTx();
  auto e =
      DecodeTmRecord(AsRecord(TmRecordType::kEnlist, EncodeEnlist(tx, tx.enlistments[0])), "tm");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->enlistment.rm, tx.enlistments[0].rm);
  EXPECT_EQ(e->enlistment.rm_name, "data");
  auto i = DecodeTmRecord(
      AsRecord(TmRecordType::kEnlistInfo,
               EncodeEnlistInfo(tx.id, tx.enlistments[0].rm, tx.enlistments[0].info)),
      "tm");
  ASSERT_TRUE(i.ok());
  EXPECT_EQ(i->enlistment.info, tx.enlistments[0].info);
}

TEST(TmRecordsTest, RestartAreaRoundTrips) {
  std::vector<TxImage> live = {SampleTx(), SampleTx()};
  live[1].decision = Decision::kNone;
  log::Record r = AsRecord(TmRecordType::kEnd, EncodeRestartArea(live));
  auto back = DecodeRestartArea(r, "tm");
  ASSERT_TRUE(back.ok());
  ASSERT_EQ(back->size(), 2u);
  EXPECT_EQ((*back)[1].decision, Decision::kNone);
  EXPECT_EQ((*back)[0].enlistments.size(), 2u);
}

TEST(TmRecordsTest, DamageIsAnErrorNamingStreamAndLsn) {
  auto payload = EncodeCommit(SampleTx());
  for (size_t cut = 0; cut < payload.size(); ++cut) {
    std::vector<std::byte> shorter(payload.begin(), payload.begin() + cut);
    auto r = DecodeTmRecord(AsRecord(TmRecordType::kCommit, shorter), "tm");
    ASSERT_FALSE(r.ok()) << "cut at " << cut;
    EXPECT_TRUE(r.status().IsCorruption());
    EXPECT_NE(r.status().message().find("stream tm: LSN 0x1234"), std::string::npos);
  }
  payload[0] = std::byte{99};  // unknown version
  EXPECT_FALSE(DecodeTmRecord(AsRecord(TmRecordType::kCommit, payload), "tm").ok());
  EXPECT_FALSE(DecodeTmRecord(AsRecord(TmRecordType::kEnd, {}), "tm").ok());
  log::Record other = AsRecord(TmRecordType::kEnd, EncodeTxId(Guid::Random()));
  other.type = 7;
  EXPECT_FALSE(DecodeTmRecord(other, "tm").ok());
}

}  // namespace
}  // namespace ktmfs::tm
