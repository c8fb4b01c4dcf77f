// Runs a libFuzzer-style target without libFuzzer (the project builds with g++): replays every
// file of a corpus directory, then a bounded number of deterministic random mutations of them.
//   standalone_main CORPUS_DIR [MUTATIONS] [SEED]
// Exit status 0 when every input ran (a crash or sanitizer report ends the process instead).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::vector<uint8_t> Mutate(std::vector<uint8_t> in, const std::vector<std::vector<uint8_t>>& all,
                            std::mt19937_64& rng) {
  int steps = 1 + int(rng() % 4);
  for (int s = 0; s < steps; ++s) {
    if (in.empty()) in.push_back(uint8_t(rng()));
    size_t at = rng() % in.size();
    switch (rng() % 7) {
      case 0:
        in[at] ^= uint8_t(1u << (rng() % 8));
        break;
      case 1:
        in[at] = uint8_t(rng());
        break;
      case 2:
        in.erase(in.begin() + long(at),
                 in.begin() + long(std::min(in.size(), at + 1 + rng() % 64)));
        break;
      case 3:
        in.insert(in.begin() + long(at), 1 + rng() % 64, uint8_t(rng() % 2 ? 0 : 0xff));
        break;
      case 4:
        in.resize(at + 1);
        break;   // truncate
      case 5: {  // splice in a piece of another input
        const auto& other = all[rng() % all.size()];
        if (other.empty()) break;
        size_t from = rng() % other.size();
        size_t n = std::min<size_t>(other.size() - from, 1 + rng() % 512);
        for (size_t i = 0; i < n && at + i < in.size(); ++i)
          in[at + i] = other[from + i];
        break;
      }
      default: {  // overwrite a little-endian integer with an interesting value
        // Small numbers too: enums, counts and flags sit just above their limits.
        static const uint64_t kValues[] = {0,          1,          2,          3,     4,
                                           8,          0x7f,       0x80,       0xff,  0x1000,
                                           0x7fffffff, 0x80000000, 0xffffffff, ~0ull, 1ull << 40};
        uint64_t v = kValues[rng() % std::size(kValues)];
        for (size_t i = 0; i < 8 && at + i < in.size(); ++i)
          in[at + i] = uint8_t(v >> (8 * i));
      }
    }
  }
  return in;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR [MUTATIONS] [SEED]\n", argv[0]);
    return 2;
  }
  const long mutations = argc > 2 ? std::atol(argv[2]) : 2000;
  const uint64_t seed = argc > 3 ? std::strtoull(argv[3], nullptr, 0) : 1;
  std::vector<std::vector<uint8_t>> corpus;
  std::vector<std::filesystem::path> paths;
  for (const auto& e : std::filesystem::directory_iterator(argv[1]))
    paths.push_back(e.path());
  std::sort(paths.begin(), paths.end());
  for (const auto& p : paths) {
    std::ifstream f(p, std::ios::binary);
    corpus.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  if (corpus.empty()) {
    std::fprintf(stderr, "%s: empty corpus\n", argv[1]);
    return 1;
  }
  for (const auto& input : corpus)
    LLVMFuzzerTestOneInput(input.data(), input.size());
  std::mt19937_64 rng(seed);
  for (long i = 0; i < mutations; ++i) {
    auto input = Mutate(corpus[rng() % corpus.size()], corpus, rng);
    LLVMFuzzerTestOneInput(input.data(), input.size());
  }
  std::printf("%zu corpus inputs and %ld mutations ran\n", corpus.size(), mutations);
  return 0;
}
