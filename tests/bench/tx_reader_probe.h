// A reader outside transactions, for the reader-latency rows of tx_bench: on its own thread it
// stats a file no transaction touches, then opens it, reads 4 KiB and closes it, over and over,
// and keeps the worst time one round took (after the first, which finds the file cold). Run while a
// big commit is applied, it shows whether readers of unrelated files wait for that commit.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

namespace ktmfs::bench {

class ReaderProbe {
 public:
  // `path`: an existing file of at least 4 KiB.
  explicit ReaderProbe(std::string path) : path_(std::move(path)) {}
  ~ReaderProbe() { Stop(); }
  void Start();
  // Stops the thread; returns "" or what failed.
  std::string Stop();
  double worst_ms() const { return worst_ms_; }
  uint64_t rounds() const { return rounds_; }

 private:
  void Run();
  std::string path_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  double worst_ms_ = 0;
  uint64_t rounds_ = 0;
  std::string error_;
};

}  // namespace ktmfs::bench
