// A reader, for the reader-latency rows of tx_bench: on its own thread, outside transactions or
// inside one of its own, it
// stats a file no transaction touches, then opens it, reads 4 KiB and closes it, over and over,
// and keeps the worst time one round took (after the first, which finds the file cold). Run while a
// big commit is applied, it shows whether readers of unrelated files wait for that commit.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace ktmfs::bench {

class ReaderProbe {
 public:
  // `path`: an existing file of at least 4 KiB.
  // `tx_dir`: if not empty, the reader runs inside a transaction of its own, begun there for
  // its thread and rolled back at the end.
  explicit ReaderProbe(std::string path, std::string tx_dir = "")
      : path_(std::move(path)), tx_dir_(std::move(tx_dir)) {}
  ~ReaderProbe() { Stop(); }
  // Starts the thread; returns once its first round (cold, not counted) is over.
  void Start();
  // Stops the thread; returns "" or what failed.
  std::string Stop();
  double worst_ms() const { return worst_ms_; }
  uint64_t rounds() const { return rounds_; }

 private:
  void Run();
  void Rounds(char* buf, size_t size);
  void Ready();
  std::string path_;
  std::string tx_dir_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  double worst_ms_ = 0;
  uint64_t rounds_ = 0;
  std::string error_;
  std::mutex ready_mu_;
  std::condition_variable ready_cv_;
  bool ready_ = false;  // the first round is over, or the thread has stopped
};

}  // namespace ktmfs::bench
