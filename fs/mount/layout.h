// The source/root layout: which backing directories the mount shows and where, and which
// entries in them are hidden (the state directory). One backing directory is the root itself;
// several named ones hang below a virtual, read-only root. Each backing directory will become
// one resource manager.
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include "fs/mount/options.h"
#include "log/status.h"

namespace ktmfs::fs {

struct Source {
  std::string name;  // top-level entry name; empty for a single unnamed source
  std::string path;  // canonical absolute path of the backing directory
};

// An entry that must not be visible through the mount: a name inside a given directory.
struct HiddenEntry {
  dev_t parent_dev;
  ino_t parent_ino;
  std::string name;
  dev_t dev;  // the entry itself, to recognise it from readdir's d_ino as well
  ino_t ino;
};

class Layout {
 public:
  // Parses SOURCE, checks each backing directory (they must not overlap) and the mountpoint,
  // then creates the state directories (0700).
  static Result<Layout> Create(const Options& options);

  bool virtual_root() const { return sources_.size() > 1 || !sources_[0].name.empty(); }
  const std::vector<Source>& sources() const { return sources_; }
  const std::string& state_dir() const { return state_dir_; }
  // Every state directory the mount writes in: the state directory, and with dedicated logs
  // each source's own .ktmfs; each appears once.
  const std::vector<std::string>& state_dirs() const { return state_dirs_; }
  const std::vector<HiddenEntry>& hidden() const { return hidden_; }

  // Whether `name` inside the directory (dev, ino) is hidden.
  bool IsHidden(dev_t parent_dev, ino_t parent_ino, const char* name) const;
  // Whether the object (dev, ino) is a hidden entry (cheap: a few comparisons).
  bool IsHiddenObject(dev_t dev, ino_t ino) const;
  // Whether the directory (dev, ino) lies between a source and a hidden entry deeper in it (a
  // state directory given by -o state=): moving it would move the hidden entry, and removing it
  // or a rename over it, which its hidden entry keeps from working in the backing directory,
  // would look possible in a transaction's view, which does not show the entry.
  bool IsGuardedDir(dev_t dev, ino_t ino) const;
  bool has_guarded_dirs() const { return !guarded_.empty(); }

 private:
  std::vector<Source> sources_;
  std::string state_dir_;
  std::vector<std::string> state_dirs_;
  std::vector<HiddenEntry> hidden_;
  std::vector<std::pair<dev_t, ino_t>> guarded_;
};

// Splits "data=/srv/data:conf=/etc/app" or "/srv/app" into sources (paths not yet checked).
Result<std::vector<Source>> ParseSources(const std::string& spec);

}  // namespace ktmfs::fs
