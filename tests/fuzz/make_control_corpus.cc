// Writes the seed corpus of the control fuzz target (tests/fuzz/corpus/control): one input per
// kind of request, well-formed, so mutations start from requests that reach every check.
//   make_control_corpus DIR
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "ktmfs.h"

namespace {

void Write(const std::string& path, uint8_t mode, const std::string& body) {
  std::ofstream f(path, std::ios::binary);
  f.put(char(mode));
  f.write(body.data(), std::streamsize(body.size()));
}

// The short form: a selector that picks the command, then its argument.
template <typename T>
void WriteIoctl(const std::string& path, uint8_t selector, const T& arg) {
  std::string body(1, char(selector));
  body.append(reinterpret_cast<const char*>(&arg), sizeof arg);
  Write(path, 2, body);
}

// The long form: any command number, the output room, then the argument.
template <typename T>
void WriteRawIoctl(const std::string& path, uint32_t cmd, const T& arg) {
  std::string body(1, char(0xf0));
  body.append(reinterpret_cast<const char*>(&cmd), 4);
  const uint16_t out_size = sizeof(T);
  body.append(reinterpret_cast<const char*>(&out_size), 2);
  body.append(reinterpret_cast<const char*>(&arg), sizeof arg);
  Write(path, 2, body);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  Write(dir + "/begin-value", 0,
        "scope=tree pid=1234 timeout=30 name=\"nightly \\\"big\\\" run\"\n");
  Write(dir + "/begin-value-thread", 0, "name=x\tscope=thread");
  Write(dir + "/xattr-begin", 1, std::string(KTMFS_XATTR_BEGIN) + '\0' + "scope=process timeout=5");
  Write(dir + "/xattr-commit", 1, std::string(KTMFS_XATTR_COMMIT) + '\0');
  Write(dir + "/xattr-holder", 1, KTMFS_XATTR_HOLDER);

  ktmfs_hello_args hello{};
  WriteIoctl(dir + "/ioctl-hello", 0, hello);
  ktmfs_begin_args begin{};
  begin.scope = KTMFS_SCOPE_THREAD;
  begin.pid = 77;
  begin.timeout_sec = 9;
  std::strcpy(begin.name, "a \"quoted\" \\ name");
  WriteIoctl(dir + "/ioctl-begin", 1, begin);
  ktmfs_txid id{};
  std::strcpy(id.id, "0a1b2c3d-0000-4000-8000-00000000000F");
  WriteIoctl(dir + "/ioctl-commit", 2, id);
  ktmfs_txid empty{};
  WriteIoctl(dir + "/ioctl-rollback", 3, empty);
  WriteRawIoctl(dir + "/ioctl-query", KTMFS_IOC_QUERY, empty);
  ktmfs_list_args list{};
  list.capacity = KTMFS_LIST_MAX;
  WriteIoctl(dir + "/ioctl-list", 6, list);
  WriteRawIoctl(dir + "/ioctl-raw-begin", KTMFS_IOC_BEGIN, begin);

  // A command name may hold ") " and newlines: the parsers must find the fields after it.
  const std::string stat =
      "4242 (a) b\n(c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 "
      "987654 1000 200 0 0";
  const std::string status =
      "Name:\tx\nTgid:\t4242\nPid:\t4242\nUid:\t1000\t1000\t1000\t1000\n"
      "Gid:\t100\t100\t100\t100\n";
  const uint16_t n = uint16_t(stat.size());
  Write(dir + "/proc", 3, std::string(reinterpret_cast<const char*>(&n), 2) + stat + status);
  return 0;
}
