// What tests of the transaction service and operations share: changes made inside a
// transaction as the daemon makes them, without a mount.
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <string>

#include "fs/service/tx_service.h"
#include "fs/tx/staging.h"

namespace ktmfs::fs {

// Transaction `id` makes the directory `path` (mode `mode`) in the first source, staged and
// logged as the daemon does it. Use under ASSERT_NO_FATAL_FAILURE.
inline void LogMkdir(TxService& txs, const Guid& id, const std::string& path, mode_t mode) {
  auto& rm = txs.rm(0);
  auto staging = rm.Staging(id);
  ASSERT_TRUE(staging.ok()) << staging.status().ToString();
  auto n = rm.NewObjectNumber(id);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  ASSERT_TRUE((*staging)->NewDirectory(fstx::StagedNameForNew(*n), mode).ok());
  fstx::Op op;
  op.kind = fstx::OpKind::kMkdir;
  op.object = fstx::ObjectId::New(*n);
  op.path = path;
  op.mode = S_IFDIR | mode;
  ASSERT_TRUE(rm.LogOp(id, op).ok());
}

}  // namespace ktmfs::fs
