// Writes the seed corpus of the log fuzz target (tests/fuzz/corpus/log) from the template log:
//   make_log_corpus DIR
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "tests/fuzz/log_fuzz.h"

using ktmfs::log::FaultInjectingStorage;

namespace {

void Write(const std::string& path, uint8_t mode, const std::vector<std::byte>& a,
           const std::vector<std::byte>* b = nullptr) {
  std::ofstream f(path, std::ios::binary);
  f.put(char(mode));
  if (b) {
    uint32_t n = uint32_t(a.size());
    f.write(reinterpret_cast<const char*>(&n), 4);
  }
  f.write(reinterpret_cast<const char*>(a.data()), std::streamsize(a.size()));
  if (b) f.write(reinterpret_cast<const char*>(b->data()), std::streamsize(b->size()));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  std::string dir = argv[1];
  FaultInjectingStorage storage;
  ktmfs::log::fuzz::BuildTemplate(&storage);
  auto base = storage.Contents("ktmfs-log.base");
  auto c0 = storage.Contents("container.000000");
  auto c1 = storage.Contents("container.000001");
  // Slot A alone is a valid base file (slot B at 64 KiB is mostly zeros): a smaller corpus.
  std::vector<std::byte> base_a(base.begin(), base.begin() + std::min<size_t>(base.size(), 1024));
  Write(dir + "/base-first-slot", 0, base_a);
  Write(dir + "/container0", 1, c0);
  Write(dir + "/container1", 2, c1);
  Write(dir + "/base-and-container0", 3, base_a, &c0);
  return 0;
}
