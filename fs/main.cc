// Placeholder entry point until the passthrough daemon lands: it only reports its version.
#include <cstdio>
#include <cstring>

#include "ktmfs_config.h"

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--version") == 0) {
    std::printf("ktmfs %s\n", KTMFS_VERSION);
    return 0;
  }
  std::fprintf(stderr, "ktmfs: the filesystem daemon is not implemented yet\n");
  return 1;
}
