#include "fs/inode_table.h"

#include <unistd.h>

namespace ktmfs::fs {

Inode::~Inode() {
  if (fd >= 0) close(fd);
}

Inode* InodeTable::AddPinned(std::unique_ptr<Inode> inode) {
  std::lock_guard lock(mu_);
  inode->pinned = true;
  inode->nlookup = 1;
  inode->generation = next_generation_++;
  Inode* raw = inode.get();
  if (inode->is_virtual_root()) {
    virtual_root_ = std::move(inode);
  } else {
    by_key_[Key{raw->dev, raw->ino}] = std::move(inode);
  }
  return raw;
}

Inode* InodeTable::Acquire(int fd, const struct stat& st, int source_index) {
  std::lock_guard lock(mu_);
  auto it = by_key_.find(Key{st.st_dev, st.st_ino});
  if (it != by_key_.end()) {
    close(fd);
    it->second->nlookup++;
    return it->second.get();
  }
  auto inode = std::make_unique<Inode>();
  inode->fd = fd;
  inode->dev = st.st_dev;
  inode->ino = st.st_ino;
  inode->type = st.st_mode & S_IFMT;
  inode->generation = next_generation_++;
  inode->nlookup = 1;
  inode->source_index = source_index;
  Inode* raw = inode.get();
  by_key_.emplace(Key{st.st_dev, st.st_ino}, std::move(inode));
  return raw;
}

void InodeTable::Ref(Inode* inode, uint64_t n) {
  std::lock_guard lock(mu_);
  inode->nlookup += n;
}

void InodeTable::Forget(Inode* inode, uint64_t n) {
  std::lock_guard lock(mu_);
  if (inode->is_virtual_root()) return;
  inode->nlookup = n >= inode->nlookup ? 0 : inode->nlookup - n;
  if (inode->nlookup == 0 && !inode->pinned) by_key_.erase(Key{inode->dev, inode->ino});
}

size_t InodeTable::size() const {
  std::lock_guard lock(mu_);
  return by_key_.size();
}

}  // namespace ktmfs::fs
