// The ktmfs daemon: parses the command line, prepares the layout and state directory, mounts,
// and serves requests until unmounted. Backgrounds only once the mount is live (unless -f).
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <malloc.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fs/daemon/command_line.h"
#include "fs/daemon/stop_notice.h"
#include "fs/fuse/caller.h"
#include "fs/fuse/invalidator.h"
#include "fs/fuse/kernel_channel.h"
#include "fs/mount/daemon_log.h"
#include "fs/mount/layout.h"
#include "fs/mount/mount_state.h"
#include "fs/mount/state_lock.h"
#include "fs/ops/filesystem.h"
#include "fs/service/tx_service.h"
#include "ktmfs_config.h"

namespace ktmfs::fs {
namespace {

int Serve(fuse_session* se, const Options& o) {
  if (o.single_thread) return fuse_session_loop(se);
  std::unique_ptr<fuse_loop_config, void (*)(fuse_loop_config*)> cfg(fuse_loop_cfg_create(),
                                                                     fuse_loop_cfg_destroy);
  fuse_loop_cfg_set_clone_fd(cfg.get(), o.clone_fd ? 1 : 0);
  // libfuse marks "not given" with 0 or UINT_MAX depending on the field.
  auto given = [](unsigned v) { return v != 0 && v != UINT_MAX; };
  if (given(o.max_idle_threads)) fuse_loop_cfg_set_idle_threads(cfg.get(), o.max_idle_threads);
  if (given(o.max_threads)) fuse_loop_cfg_set_max_threads(cfg.get(), o.max_threads);
  return fuse_session_loop_mt(se, cfg.get());
}

// Every inode the kernel knows holds an O_PATH descriptor: allow as many as the system does.
// A root daemon may raise the hard limit up to the kernel's fs.nr_open; any other only its
// soft limit, up to the hard one.
void RaiseFileLimit() {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  unsigned long long nr_open = 0;
  if (FILE* f = std::fopen("/proc/sys/fs/nr_open", "r")) {
    if (std::fscanf(f, "%llu", &nr_open) != 1) nr_open = 0;
    std::fclose(f);
  }
  if (nr_open > rl.rlim_max) {
    struct rlimit most = {static_cast<rlim_t>(nr_open), static_cast<rlim_t>(nr_open)};
    if (setrlimit(RLIMIT_NOFILE, &most) == 0) return;
  }
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

// A transaction holds its xattr values in memory until it ends, in allocations of up to 64 KiB
// each. glibc raises its mmap threshold after the first big free, and from then on such values
// land on the heap, whose freed middle it keeps: three transactions of 30 MB of values each
// left 155 MiB held, growing. With a fixed threshold they are mapped, and an ended
// transaction's memory goes back to the system (6 MiB held after each of the three).
void ReturnBigAllocationsToTheSystem() {
  mallopt(M_MMAP_THRESHOLD, 32 << 10);
}

// Forks. The child returns -1 and is the daemon (in a new session); the parent waits for the
// daemon to write one byte on *ready_fd (the mount is live) or to exit, and returns the exit
// status the command should have.
int BackgroundAndWait(int* ready_fd) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) {
    std::perror("ktmfs: pipe");
    return 1;
  }
  pid_t pid = fork();
  if (pid < 0) {
    std::perror("ktmfs: fork");
    return 1;
  }
  if (pid == 0) {
    close(p[0]);
    setsid();
    *ready_fd = p[1];
    return -1;
  }
  close(p[1]);
  char byte;
  ssize_t n;
  do {
    n = read(p[0], &byte, 1);
  } while (n < 0 && errno == EINTR);
  if (n == 1) return 0;
  // The daemon exited before mounting: its own messages said why.
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) != 0 ? WEXITSTATUS(status) : 1;
}

// What fuse_daemonize does once the daemon is on its own: no terminal, no working directory.
void DetachStdio() {
  (void)!chdir("/");  // a failure only keeps the old directory busy
  int null = open("/dev/null", O_RDWR);
  if (null < 0) return;
  dup2(null, 0);
  dup2(null, 1);
  dup2(null, 2);
  if (null > 2) close(null);
}

// libfuse checks its own options only when the session is made, which must wait for recovery
// (the session's callbacks need the transaction service). A throwaway session checks them
// first, so that a wrong option is refused before anything is created. libfuse prints why.
bool LibfuseAcceptsOptions(const Options& o) {
  std::vector<std::string> copy = o.fuse_args;
  std::vector<char*> argv;
  for (std::string& a : copy)
    argv.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  std::unique_ptr<fuse_args, void (*)(fuse_args*)> guard(&args, fuse_opt_free_args);
  fuse_lowlevel_ops ops{};
  // Its debug lines (with -d) are printed again by the real session.
  fuse_set_log_func([](fuse_log_level level, const char* fmt, va_list ap) {
    if (level <= FUSE_LOG_WARNING) std::vfprintf(stderr, fmt, ap);
  });
  fuse_session* se = fuse_session_new(&args, &ops, sizeof ops, nullptr);
  fuse_set_log_func(nullptr);  // libfuse's own again
  if (se == nullptr) return false;
  fuse_session_destroy(se);
  return true;
}

// Mounting hides what the mountpoint holds; libfuse 3 does it without a word. Said once, on
// the terminal of whoever mounts, unless they said it was intended.
void WarnIfMountpointHoldsFiles(const Options& o) {
  if (o.nonempty) return;
  DIR* d = opendir(o.mountpoint.c_str());
  if (d == nullptr) return;  // the mount itself reports what is wrong with it
  bool empty = true;
  while (dirent* e = readdir(d)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
      empty = false;
      break;
    }
  }
  closedir(d);
  if (!empty) {
    DaemonLog(LogLevel::kWarning, "warning: " + o.mountpoint +
                                      " is not empty: what it holds is hidden while ktmfs is "
                                      "mounted on it (-o nonempty says that is intended)");
  }
}

// How long a mount waits for an unmounted predecessor to let go of the state directory: its
// unmount checkpoints the log and closes it, which takes well under this.
constexpr int kWaitForPreviousMs = 30'000;

int Run(int argc, char** argv) {
  auto cl = ParseCommandLine(argc, argv);
  if (!cl.ok()) {
    DaemonLog(LogLevel::kError, cl.status().message());
    return 1;
  }
  if (cl->action == CommandLine::Action::kHelp) {
    PrintUsage(argv[0]);
    fuse_cmdline_help();
    fuse_lowlevel_help();
    return 0;
  }
  if (cl->action == CommandLine::Action::kVersion) {
    std::printf("ktmfs %s\n", KTMFS_VERSION);
    std::printf("FUSE library version %s\n", fuse_pkgversion());
    std::fflush(stdout);  // fuse_lowlevel_version runs fusermount3, which writes directly
    fuse_lowlevel_version();
    return 0;
  }
  Options& options = cl->options;
  if (options.remount) {
    // mount(8)'s `-o remount` reaches the helper too: no second daemon, the kernel remounts.
    if (Status s = Remount(options.mountpoint, options.read_only); !s.ok()) {
      DaemonLog(LogLevel::kError, s.message());
      return 1;
    }
    return 0;
  }
  if (!LibfuseAcceptsOptions(options)) return 1;
  WarnIfMountpointHoldsFiles(options);
  // The daemon's own files get exactly the modes it asks for; creates for callers carry their
  // umask on the creating thread (fs/fuse/caller.h).
  umask(0);
  RaiseFileLimit();
  ReturnBigAllocationsToTheSystem();
  IdentityScope::InitProcessIdentity();

  auto layout = Layout::Create(options);
  if (!layout.ok()) {
    DaemonLog(LogLevel::kError, layout.status().message());
    return 1;
  }
  Filesystem fs(options, std::move(*layout));
  if (Status s = fs.OpenRoots(); !s.ok()) {
    DaemonLog(LogLevel::kError, s.message());
    return 1;
  }

  // The transaction service runs threads, which a fork after it would lose: the daemon goes to
  // the background first, and the foreground process waits until the mount is live.
  int ready_fd = -1;
  if (!options.foreground) {
    int rc = BackgroundAndWait(&ready_fd);
    if (rc >= 0) return rc;  // the foreground process, with the daemon's verdict
    DaemonLogToSyslog(/*keep_stderr=*/true);
    // libfuse's messages follow the daemon's.
    fuse_set_log_func([](fuse_log_level level, const char* fmt, va_list ap) {
      char buf[1024];
      std::vsnprintf(buf, sizeof buf, fmt, ap);
      std::string m = buf;
      while (!m.empty() && m.back() == '\n')
        m.pop_back();
      DaemonLog(level <= FUSE_LOG_ERR       ? LogLevel::kError
                : level == FUSE_LOG_WARNING ? LogLevel::kWarning
                : level == FUSE_LOG_NOTICE  ? LogLevel::kNotice
                                            : LogLevel::kInfo,
                m);
    });
  }
  // The passthrough bookkeeping holds a read lease for an instant (fstx::StillOpenForWriting);
  // a lease break in that instant signals the holder with SIGIO, whose default would kill it.
  signal(SIGIO, SIG_IGN);
  // Taken by the daemon itself, so that the pid it records is the one that holds them, and
  // before recovery: a second daemon must not replay or append to a log this one writes.
  std::vector<std::string> source_paths;
  for (const Source& s : fs.layout().sources())
    source_paths.push_back(s.path);
  auto locks = LockMount(fs.layout().state_dirs(), source_paths, options.mountpoint);
  // `umount` returns before the daemon it unmounted has closed its log: a mount right after it
  // finds the locks still held. A holder whose mountpoint (it wrote it into the lock file) has
  // no ktmfs mount any more is on its way out: wait for it (a bounded while), rather than fail
  // a mount that is about to be fine. A holder still serving its mount fails this one at once.
  auto holder_gone = [&] {
    for (const std::string& dir : fs.layout().state_dirs()) {
      if (!StateDirLockHolder(dir)) continue;
      auto mnt = StateDirLockMountpoint(dir);
      return mnt.has_value() && !KtmfsMountedAt(*mnt);
    }
    return false;
  };
  for (int waited_ms = 0; !locks.ok() && locks.status().code() == EBUSY && holder_gone() &&
                          waited_ms < kWaitForPreviousMs;
       waited_ms += 100) {
    if (waited_ms == 1000) {
      DaemonLog(LogLevel::kNotice,
                "waiting for the previous daemon, which is no longer mounted, "
                "to exit: " +
                    locks.status().message());
    }
    usleep(100 * 1000);
    locks = LockMount(fs.layout().state_dirs(), source_paths, options.mountpoint);
  }
  if (!locks.ok()) {
    DaemonLog(LogLevel::kError, locks.status().message());
    return 1;
  }
  // Recovery runs before the mount appears: nobody sees a half-applied transaction.
  auto txs = TxService::Start(options, fs.layout());
  if (!txs.ok()) {
    std::string hint;
    // A damaged log stops every mount until someone acts: say how.
    if (txs.status().IsCorruption()) {
      hint =
          "; `ktmfs-log check` on that log's directory shows the damage, `ktmfs-log salvage` "
          "gets past it keeping what is whole (ktmfs-log(8))";
    }
    DaemonLog(LogLevel::kError, "cannot start transactions: " + txs.status().message() + hint);
    return 1;
  }
  fs.SetTxService(txs->get());
  fs.inodes().SetDescriptorsHeldElsewhere([t = txs->get()] { return t->DescriptorsHeld(); });
  PassthroughFiles::WatchLingeringWriters(fs);

  fuse_lowlevel_ops ops{};
  AddEntryOps(&ops);
  AddFileOps(&ops);
  AddDirOps(&ops);
  AddXattrOps(&ops);
  AddSessionOps(&ops);
  AddControlOps(&ops);

  std::vector<char*> argv_fuse;
  for (std::string& a : options.fuse_args)
    argv_fuse.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv_fuse.size()), argv_fuse.data());
  // fuse_session_new may reallocate the argument list; it is freed on every path.
  std::unique_ptr<fuse_args, void (*)(fuse_args*)> args_guard(&args, fuse_opt_free_args);
  // Outlives the session, whose reads and writes go through it once installed.
  ChannelWants wants;
  wants.killpriv_v2 = options.killpriv_v2;
  wants.report_always = options.foreground || options.debug;
  // The kernel serves a passed-through file around its page cache, which the writeback cache
  // needs; and registering a backing file takes CAP_SYS_ADMIN.
  wants.passthrough = options.passthrough && !options.cache.writeback && geteuid() == 0;
  // -s asks for one request at a time; the ring's threads would serve others beside it.
  wants.uring = options.uring && !options.single_thread;
  wants.uring_entries = options.uring_entries;
  KernelChannel channel(wants);
  fuse_session* se = fuse_session_new(&args, &ops, sizeof ops, &fs);
  if (se == nullptr) return 1;  // libfuse printed why (e.g. an unknown option)
  Invalidator invalidator(se);
  fs.SetInvalidator(&invalidator);
  Invalidator direct_writes(se);
  fs.SetDirectWriteInvalidator(&direct_writes);
  (*txs)->SetBeforeEnd([&fs](const Guid& tx, bool commit) { fs.BeforeTxEnd(tx, commit); });
  (*txs)->SetOnEnded([&fs](const EndedTx& e) { fs.OnTxEnded(e); });
  (*txs)->SetOnLetIn([&fs](const Guid& tx, int source, const std::vector<fstx::ObjectId>& objects) {
    fs.OnLetIn(tx, source, objects);
  });
  (*txs)->SetReplaceWhen([&fs](const Guid& tx, int source, const fstx::ObjectId& id) {
    return fs.inodes().ReplaceWhen(tx, source, id);
  });
  (*txs)->SetExecuting([&fs](int source, const fstx::ObjectId& id) {
    return fs.inodes().IsExecuting(source, static_cast<dev_t>(id.dev), static_cast<ino_t>(id.ino));
  });
  int ret = 1;
  if (fuse_set_signal_handlers(se) == 0) {
    // Gone before fuse_remove_signal_handlers, and before the service it lists.
    std::optional<StopNotice> stop_notice;
    stop_notice.emplace(
        [t = txs->get()](int sig) { DaemonLog(LogLevel::kNotice, DescribeStop(sig, t->List())); });
    if (fuse_session_mount(se, options.mountpoint.c_str()) == 0) {
      // Before the loop reads the kernel's INIT, which is already queued.
      if (wants.Any()) {
        if (Status s = channel.Install(se); !s.ok()) {
          DaemonLog(LogLevel::kWarning,
                    "serving without the kernel's newer FUSE features: " + s.message());
        }
      }
      if (ready_fd >= 0) {
        // Mounted: let the foreground process exit 0, and leave the terminal alone.
        char ok = 0;
        (void)!write(ready_fd, &ok, 1);
        close(ready_fd);
        ready_fd = -1;
        DetachStdio();
        DaemonLogToSyslog(/*keep_stderr=*/false);
      }
      ret = Serve(se, options);
      // The ring's threads run handlers too; they end with the loop, before anything they use.
      channel.StopRing();
      // Before the unmount closes the session's descriptor: a transaction ending meanwhile (the
      // reaper's) would write its invalidations to a closed descriptor, or to a file that
      // reuses its number (TSan under txcheck).
      // Bounded: a commit's let_in has it drop pages too (Filesystem::OnLetIn).
      invalidator.Discard(std::chrono::seconds(1));
      direct_writes.Discard(std::chrono::seconds(1));
      fuse_session_unmount(se);
    }
    stop_notice.reset();
    fuse_remove_signal_handlers(se);
  }
  // Unmounted: the kernel caches nothing of the mount any more and the session's device is
  // closed, so the rollbacks below have nothing to invalidate. Whatever is still live rolls
  // back now, with the log still open.
  invalidator.Discard(std::chrono::seconds(1));  // again, for the paths that never mounted
  direct_writes.Discard(std::chrono::seconds(1));
  fs.inodes().SetDescriptorsHeldElsewhere(nullptr);
  fs.SetTxService(nullptr);
  txs->reset();
  fs.SetInvalidator(nullptr);
  fs.SetDirectWriteInvalidator(nullptr);
  fuse_session_destroy(se);
  FreeUnreleasedDirHandles();
  // SIGINT, SIGTERM and SIGHUP end the loop with the signal's number: a requested, clean stop.
  return ret == 0 || ret == SIGINT || ret == SIGTERM || ret == SIGHUP ? 0 : 1;
}

}  // namespace
}  // namespace ktmfs::fs

int main(int argc, char** argv) {
  return ktmfs::fs::Run(argc, argv);
}
