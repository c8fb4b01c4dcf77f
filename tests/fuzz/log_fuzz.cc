// Fuzz target: arbitrary bytes become the base file and/or a container of a small log, which is
// then opened and read in every way; it must never crash, hang or return a damaged record.
//
// Input: byte 0 selects what the rest replaces (mod 4): 0 the base file, 1 container 0,
// 2 container 1, 3 both base file and container 0 (the next 4 bytes, little-endian, give the
// base file's length). The other files come from a small well-formed log (LogFuzzTemplate).
#include "tests/fuzz/log_fuzz.h"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "log/fault_storage.h"
#include "log/log.h"

namespace ktmfs::log::fuzz {

LogOptions TemplateOptions() {
  LogOptions o;
  o.block_size = 512;
  o.container_size = 4096;
  o.initial_containers = 2;
  o.max_containers = 4;
  return o;
}

void BuildTemplate(FaultInjectingStorage* storage) {
  auto log = Log::Open(storage, TemplateOptions());
  if (!log.ok()) return;
  auto tm = (*log)->OpenStream("tm");
  auto rm = (*log)->OpenStream("rm");
  if (!tm.ok() || !rm.ok()) return;
  std::vector<std::byte> payload(1500);
  for (size_t i = 0; i < payload.size(); ++i)
    payload[i] = std::byte(i * 7);
  Lsn prev = kInvalidLsn;
  for (size_t size : {0, 10, 100, 500, 1500, 30}) {
    Stream* s = size % 20 == 0 ? *tm : *rm;
    auto lsn = s->Append({.type = 1, .payload = {payload.data(), size}, .prev_lsn = prev});
    if (!lsn.ok()) return;
    prev = *lsn;
    if (size == 100) (void)(*tm)->WriteRestartArea({payload.data(), 40});
  }
  (void)(*tm)->WriteRestartArea({payload.data(), 20});
  (void)(*log)->Close();
}

namespace {

const std::vector<std::byte>& TemplateFile(const std::string& name) {
  static FaultInjectingStorage* storage = [] {
    auto* s = new FaultInjectingStorage();
    BuildTemplate(s);
    return s;
  }();
  static std::map<std::string, std::vector<std::byte>> cache;
  auto it = cache.find(name);
  if (it == cache.end()) it = cache.emplace(name, storage->Contents(name)).first;
  return it->second;
}

void Drain(Cursor* c, int limit) {
  Record r;
  for (int i = 0; i < limit; ++i) {
    auto more = c->Next(&r);
    if (!more.ok() || !*more) return;
  }
}

}  // namespace

void RunOne(const uint8_t* data, size_t size) {
  if (size == 0) return;
  const auto* bytes = reinterpret_cast<const std::byte*>(data);
  FaultInjectingStorage storage;
  storage.set_max_file_size(1 << 20);  // a fuzzed base file may ask for huge containers
  for (const char* name : {"ktmfs-log.base", "container.000000", "container.000001"}) {
    storage.SetContents(name, TemplateFile(name));
  }
  std::vector<std::byte> rest(bytes + 1, bytes + size);
  switch (data[0] % 4) {
    case 0:
      storage.SetContents("ktmfs-log.base", rest);
      break;
    case 1:
      storage.SetContents("container.000000", rest);
      break;
    case 2:
      storage.SetContents("container.000001", rest);
      break;
    default: {
      uint32_t n = 0;
      if (rest.size() >= 4) std::memcpy(&n, rest.data(), 4);
      size_t split = rest.size() < 4 ? 0 : std::min<size_t>(n, rest.size() - 4);
      storage.SetContents("ktmfs-log.base", {rest.begin() + 4 * (rest.size() >= 4),
                                             rest.begin() + 4 * (rest.size() >= 4) + split});
      storage.SetContents("container.000000",
                          {rest.begin() + 4 * (rest.size() >= 4) + split, rest.end()});
    }
  }
  auto log = Log::Open(&storage, TemplateOptions(), false);
  if (std::getenv("KTMFS_FUZZ_VERBOSE"))
    std::fprintf(stderr, "open: %s\n", log.status().ToString().c_str());
  if (!log.ok()) return;
  Log* l = log->get();
  auto all = l->ReadAll(kInvalidLsn);
  Drain(all.get(), 100000);
  for (const StreamInfo& info : l->Streams()) {
    auto s = l->OpenStream(info.name, false);
    if (!s.ok()) continue;
    Stream* st = *s;
    auto ra = st->ReadRestartArea();
    Lsn at = info.restart_lsn;
    for (int i = 0; i < 50 && at != kInvalidLsn; ++i) {
      auto prev = st->ReadPreviousRestartArea(at);
      if (!prev.ok()) break;
      at = prev->lsn;
    }
    for (auto chain :
         {Stream::Chain::kStreamPrevious, Stream::Chain::kPrevious, Stream::Chain::kUndoNext}) {
      auto back = st->ReadBackward(info.last_lsn, chain);
      Drain(back.get(), 100000);
    }
    auto fwd = st->ReadForward(info.base_lsn);
    Drain(fwd.get(), 100000);
    (void)st->Read(info.base_lsn);
    // And the log keeps working: append, flush, read back.
    std::byte small[16] = {};
    auto lsn = st->Append({.type = 2, .payload = small});
    if (lsn.ok() && st->Flush(*lsn).ok()) (void)st->Read(*lsn);
  }
  (void)l->Close();
}

}  // namespace ktmfs::log::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ktmfs::log::fuzz::RunOne(data, size);
  return 0;
}
