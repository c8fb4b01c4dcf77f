#include "mount_harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <linux/magic.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#ifndef FUSE_SUPER_MAGIC
#define FUSE_SUPER_MAGIC 0x65735546
#endif

extern char** environ;

namespace ktmfs::fs::testing {
namespace {

constexpr auto kDeadline = std::chrono::seconds(20);

// Polls `ready` until it holds or the deadline passes: waiting for an asynchronous event
// (a mount appearing, a daemon exiting), never a timing check.
bool WaitFor(const std::function<bool()>& ready) {
  auto until = std::chrono::steady_clock::now() + kDeadline;
  while (!ready()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

int RemoveEntry(const char* path, const struct stat*, int, struct FTW*) {
  remove(path);
  return 0;
}

// Unmounts every mount below `dir` (deepest first) so a failed test leaves nothing behind.
void UnmountBelow(const std::string& dir) {
  std::ifstream in("/proc/self/mounts");
  std::vector<std::string> found;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string src, mnt;
    ls >> src >> mnt;
    if (mnt.compare(0, dir.size() + 1, dir + "/") == 0) found.push_back(mnt);
  }
  for (auto it = found.rbegin(); it != found.rend(); ++it)
    Unmount(*it);
}

}  // namespace

std::string KtmfsBinary() {
  const char* b = getenv("KTMFS_BIN");
  return b != nullptr && *b != '\0' ? b : "ktmfs";
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/ktmfs-test-XXXXXX";
  char* p = mkdtemp(tmpl);
  if (p != nullptr) {
    path_ = p;
    chmod(p, 0755);  // other users (the multi-user tests) must be able to walk it
  }
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  UnmountBelow(path_);
  nftw(path_.c_str(), RemoveEntry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

std::string TempDir::MakeDir(const std::string& name) const {
  std::string p = Sub(name);
  mkdir(p.c_str(), 0755);
  return p;
}

CommandResult RunCommand(const std::vector<std::string>& argv,
                         const std::vector<std::string>& extra_env) {
  CommandResult r;
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) return r;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(pipefd[1], 1);
    dup2(pipefd[1], 2);
    for (const std::string& e : extra_env)
      putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> args;
    for (const std::string& a : argv)
      args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(pipefd[1]);
  char buf[4096];
  ssize_t n;
  while ((n = read(pipefd[0], buf, sizeof buf)) > 0)
    r.output.append(buf, static_cast<size_t>(n));
  close(pipefd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

bool IsFuseMount(const std::string& path) {
  struct statfs sf;
  if (statfs(path.c_str(), &sf) != 0) return false;
  return static_cast<unsigned long>(sf.f_type) == FUSE_SUPER_MAGIC && !ProcMountsLine(path).empty();
}

std::string ProcMountsLine(const std::string& path) {
  std::ifstream in("/proc/self/mounts");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string src, mnt;
    ls >> src >> mnt;
    if (mnt == path) return line;
  }
  return "";
}

std::vector<pid_t> DaemonsFor(const std::string& mountpoint) {
  std::vector<pid_t> out;
  DIR* d = opendir("/proc");
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    pid_t pid = atoi(e->d_name);
    if (pid <= 0) continue;
    std::string cmd = ReadFile("/proc/" + std::string(e->d_name) + "/cmdline");
    std::vector<std::string> args;
    std::string cur;
    for (char c : cmd) {
      if (c == '\0') {
        args.push_back(cur);
        cur.clear();
      } else {
        cur += c;
      }
    }
    if (args.empty()) continue;
    std::string stat = ReadFile("/proc/" + std::string(e->d_name) + "/stat");
    if (stat.find(") Z") != std::string::npos) continue;  // exited, not yet reaped
    bool is_ktmfs = args[0].size() >= 5 && args[0].compare(args[0].size() - 5, 5, "ktmfs") == 0;
    if (!is_ktmfs) continue;
    for (const std::string& a : args) {
      if (a == mountpoint) out.push_back(pid);
    }
  }
  closedir(d);
  return out;
}

bool WaitNoDaemon(const std::string& mountpoint) {
  return WaitFor([&] { return DaemonsFor(mountpoint).empty(); });
}

bool Unmount(const std::string& mountpoint) {
  if (ProcMountsLine(mountpoint).empty()) return true;
  RunCommand({"fusermount3", "-u", mountpoint});
  if (!ProcMountsLine(mountpoint).empty()) RunCommand({"umount", "-l", mountpoint});
  return ProcMountsLine(mountpoint).empty();
}

Mount::~Mount() {
  if (pid_ > 0) Stop();
}

std::string Mount::Start(const std::string& source, const std::string& mountpoint,
                         const std::vector<std::string>& options) {
  mountpoint_ = mountpoint;
  log_path_ = mountpoint + ".log";
  std::vector<std::string> argv = {KtmfsBinary(), "-f"};
  for (const std::string& o : options) {
    argv.push_back("-o");
    argv.push_back(o);
  }
  argv.push_back(source);
  argv.push_back(mountpoint);
  pid_ = fork();
  if (pid_ == 0) {
    int fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    std::vector<char*> args;
    for (const std::string& a : argv)
      args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  bool exited = false;
  int status = 0;
  bool live = WaitFor([&] {
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      exited = true;
      return true;
    }
    return IsFuseMount(mountpoint);
  });
  if (exited) {
    pid_ = -1;
    return "ktmfs exited before mounting (status " + std::to_string(status) +
           "): " + ReadFile(log_path_);
  }
  if (!live) {
    Stop();
    return "the mount did not appear: " + ReadFile(log_path_);
  }
  return "";
}

std::string Mount::Stop() {
  if (pid_ <= 0) return "not running";
  std::string why;
  if (!Unmount(mountpoint_)) why = "could not unmount " + mountpoint_;
  int status = 0;
  bool reaped = WaitFor([&] { return waitpid(pid_, &status, WNOHANG) == pid_; });
  if (!reaped) {
    kill(pid_, SIGKILL);
    waitpid(pid_, &status, 0);
    why += " the daemon did not exit after unmount";
  } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    why += " the daemon exited with status " + std::to_string(status) + ": " + ReadFile(log_path_);
  }
  pid_ = -1;
  return why;
}

std::string Mount::WaitExit() {
  if (pid_ <= 0) return "not running";
  int status = 0;
  std::string why;
  if (!WaitFor([&] { return waitpid(pid_, &status, WNOHANG) == pid_; })) {
    Unmount(mountpoint_);
    kill(pid_, SIGKILL);
    waitpid(pid_, &status, 0);
    why = "the daemon did not exit";
  } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    why = "the daemon exited with status " + std::to_string(status) + ": " + ReadFile(log_path_);
  }
  pid_ = -1;
  return why;
}

std::string WithKtmfsInstalled(const std::function<std::string()>& fn) {
  TempDir bin;
  std::string target = KtmfsBinary();
  if (target.find('/') == std::string::npos) return "KTMFS_BIN must be a path";
  if (symlink(target.c_str(), bin.Sub("ktmfs").c_str()) != 0) return "cannot link the binary";
  int pipefd[2];
  if (pipe(pipefd) != 0) return "pipe failed";
  pid_t pid = fork();
  if (pid == 0) {
    close(pipefd[0]);
    std::string result;
    if (unshare(CLONE_NEWNS) != 0 ||
        mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        mount(bin.path().c_str(), "/usr/local/sbin", nullptr, MS_BIND, nullptr) != 0) {
      result = std::string("cannot prepare a mount namespace: ") + strerror(errno);
    } else {
      result = fn();
    }
    if (write(pipefd[1], result.data(), result.size()) < 0) _exit(2);
    _exit(0);
  }
  close(pipefd[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(pipefd[0], buf, sizeof buf)) > 0)
    out.append(buf, static_cast<size_t>(n));
  close(pipefd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) out += " (the namespace child failed)";
  return out;
}

int AsUser(uid_t uid, gid_t gid, const std::function<int()>& fn, mode_t umask_value) {
  pid_t pid = fork();
  if (pid == 0) {
    if (setgroups(0, nullptr) != 0 || setresgid(gid, gid, gid) != 0 ||
        setresuid(uid, uid, uid) != 0) {
      _exit(255);
    }
    umask(umask_value);
    _exit(fn() & 0xff);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 254;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  return static_cast<bool>(out);
}

}  // namespace ktmfs::fs::testing
