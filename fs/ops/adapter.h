// The one way a FUSE request on nodes reaches an operation. The handler names the node; Serve
// enters the caller's transaction, classifies the request once (Classify in tx_view.h), calls the
// committed view's operation or the transaction's, and sends the Reply it returns
// (fs/fuse/reply.h), all while the caller's transaction stays entered. The operations decide and
// return; none of them replies. Inside a transaction the request also passes the visibility gate
// for its nodes while a commit still writes big files in place (Filesystem::ReadingInTx).
#pragma once

#include <fuse_lowlevel.h>

#include "fs/fuse/reply.h"
#include "fs/ops/filesystem.h"
#include "fs/ops/tx_ops.h"
#include "fs/ops/tx_view.h"

namespace ktmfs::fs {

// What the request does to its node: a read of a committed file the transaction has not
// changed is served as committed (ClassifyRead). Inside a transaction, a read or a read-only
// open (which reads nothing of the file's data) reads a file an apply is still writing in place
// as apply serves it, from staging, instead of waiting for the copy (Filesystem::ReadingInTx).
// kReadLayout reads what cannot be served (where the data and holes are): it waits, as a
// change does, and through the handle of an ended transaction too.
enum class Access { kChange, kRead, kOpen, kReadLayout };
// Whether a request of this kind inside a transaction is served files an apply still copies.
inline bool ServedInTx(Access access) {
  return access == Access::kRead || access == Access::kOpen;
}

// What Serve sends unless told otherwise: the operation's Reply as it is.
struct AsIs {
  Reply operator()(Reply r) const { return r; }
};

// `committed()` and `in_tx(const TxGuard&)` each return a Reply. `last(Reply)`, if given, sees
// every reply, the stale route's included, just before it is sent: the last moment the request
// still owns the node (after the reply, the kernel may forget it).
template <typename Committed, typename InTx, typename Last = AsIs>
void Serve(fuse_req_t req, Inode* node, Access access, Committed&& committed, InTx&& in_tx,
           Last&& last = {}) {
  Filesystem& fs = Fs(req);
  TxGuard tx = fs.EnterTx(req);
  const Route route = access == Access::kRead ? ClassifyRead(fs, tx, node) : Classify(fs, tx, node);
  switch (route) {
    case Route::kTx: {
      auto visible = fs.ReadingInTx(node, nullptr, ServedInTx(access));
      ReadingThrough through(tx, &visible);
      Send(req, last(in_tx(tx)));
      return;
    }
    case Route::kStale:
      Send(req, last(Reply::Error(ESTALE)));
      return;
    case Route::kCommitted:
      Send(req, last(committed()));
      return;
  }
}

// Requests on two nodes (link: the file and the new parent; rename: both parents). A stale
// node makes the request stale. Inside a transaction both must be the transaction's (a link
// also refuses two committed nodes, the virtual root's; a rename lets them through, for the
// committed view to refuse); outside one, the committed view serves.
enum class PairRule { kLink, kRename };

template <typename Committed, typename InTx>
void ServePair(fuse_req_t req, Inode* a, Inode* b, PairRule rule, Committed&& committed,
               InTx&& in_tx) {
  Filesystem& fs = Fs(req);
  TxGuard tx = fs.EnterTx(req);
  const Route ra = Classify(fs, tx, a), rb = Classify(fs, tx, b);
  const bool stale = ra == Route::kStale || rb == Route::kStale;
  const bool both_tx = ra == Route::kTx && rb == Route::kTx;
  if (stale ||
      (tx && !both_tx && (rule == PairRule::kLink || ra == Route::kTx || rb == Route::kTx))) {
    Send(req, Reply::Error(ESTALE));
  } else if (both_tx) {
    auto visible = fs.ReadingInTx(a, b);
    Send(req, in_tx(tx));
  } else {
    Send(req, committed());
  }
}

// Requests on a file opened inside a transaction: its handle names the transaction, which is
// entered (empty once it has ended) for as long as `op(const TxGuard&)` runs and its Reply goes
// out, since a reply may still read the file (Reply::FileData). A read (`access` kRead) reads a
// file an apply still writes in place as it is served (see Access).
template <typename Op>
void ServeTxHandle(fuse_req_t req, const fuse_file_info* fi, Op&& op,
                   Access access = Access::kChange) {
  Filesystem& fs = Fs(req);
  TxGuard tx = txops::EnterByHandle(fs, fi);
  const Inode* inode = txops::HandleInode(fi);
  // Once the transaction has ended, the handle reads the committed file as any reader outside
  // transactions does, through a pass of its own (the guard is empty, but still carries it). A
  // change gets no pass: the handle writes and syncs the committed file too, and an apply would
  // wait for those with the visibility lock held.
  fstx::VisibilityGate::Pass visible;
  if (tx) {
    visible = fs.ReadingInTx(inode, nullptr, ServedInTx(access));
  } else if (access == Access::kRead) {
    visible = fs.ReadingCommittedOrServed(inode);
  } else if (access == Access::kReadLayout) {
    visible = fs.ReadingCommitted(inode);
  }
  ReadingThrough through(tx, &visible);
  Send(req, op(tx));
}

}  // namespace ktmfs::fs
