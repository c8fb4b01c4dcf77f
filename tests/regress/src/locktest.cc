// locktest FILE: checks advisory locking between two processes on one file: fcntl (POSIX)
// record locks, open file description (OFD) locks and flock. The parent takes a lock, a forked
// child probes it; the two step in lock-step through pipes, so the outcome never depends on
// timing. Prints one line per step; a lock that should conflict prints EAGAIN.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>

namespace {

const char* g_path;
int g_to_child[2], g_to_parent[2];

std::string ErrName(int e) {
  const char* n = strerrorname_np(e);
  return n ? n : "E" + std::to_string(e);
}

void Step(const char* who, const char* what, int rc) {
  std::printf("%s: %s: %s\n", who, what, rc < 0 ? ErrName(errno).c_str() : "OK");
  std::fflush(stdout);
}

void Send(int fd) {
  char c = 'x';
  if (write(fd, &c, 1) != 1) std::exit(3);
}

void Wait(int fd) {
  char c;
  if (read(fd, &c, 1) != 1) std::exit(3);
}

int Open() {
  int fd = open(g_path, O_RDWR);
  if (fd < 0) {
    std::printf("open %s: %s\n", g_path, ErrName(errno).c_str());
    std::exit(1);
  }
  return fd;
}

int Lock(int fd, int cmd, short type, off_t start, off_t len) {
  struct flock fl = {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  return fcntl(fd, cmd, &fl);
}

// Runs parent and child bodies in lock-step: each body calls Send/Wait on its pipe ends.
void Scenario(const char* title, const std::function<void()>& parent,
              const std::function<void()>& child) {
  std::printf("== %s\n", title);
  std::fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) std::exit(3);
  if (pid == 0) {
    child();
    std::fflush(stdout);
    _exit(0);
  }
  parent();
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) std::printf("child failed: %d\n", status);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: locktest FILE\n");
    return 2;
  }
  g_path = argv[1];
  if (pipe(g_to_child) < 0 || pipe(g_to_parent) < 0) return 3;
  const int tc = g_to_child[1], fc = g_to_child[0], tp = g_to_parent[1], fp = g_to_parent[0];

  Scenario(
      "fcntl write lock against read and write locks",
      [&] {
        int fd = Open();
        Step("parent", "F_SETLK F_WRLCK 0+100", Lock(fd, F_SETLK, F_WRLCK, 0, 100));
        Send(tc);
        Wait(fp);
        close(fd);
      },
      [&] {
        int fd = Open();
        Wait(fc);
        Step("child", "F_SETLK F_RDLCK 50+10", Lock(fd, F_SETLK, F_RDLCK, 50, 10));
        Step("child", "F_SETLK F_WRLCK 99+1", Lock(fd, F_SETLK, F_WRLCK, 99, 1));
        Step("child", "F_SETLK F_WRLCK 100+10", Lock(fd, F_SETLK, F_WRLCK, 100, 10));
        struct flock fl = {};
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        fl.l_start = 10;
        fl.l_len = 1;
        fcntl(fd, F_GETLK, &fl);
        std::printf("child: F_GETLK 10+1: type %s start %lld len %lld pid %s\n",
                    fl.l_type == F_WRLCK   ? "F_WRLCK"
                    : fl.l_type == F_UNLCK ? "F_UNLCK"
                                           : "other",
                    static_cast<long long>(fl.l_start), static_cast<long long>(fl.l_len),
                    fl.l_pid == getppid() ? "parent" : "other");
        Send(tp);
      });

  Scenario(
      "fcntl shared read locks",
      [&] {
        int fd = Open();
        Step("parent", "F_SETLK F_RDLCK 0+0", Lock(fd, F_SETLK, F_RDLCK, 0, 0));
        Send(tc);
        Wait(fp);
        Step("parent", "F_SETLK F_UNLCK 0+0", Lock(fd, F_SETLK, F_UNLCK, 0, 0));
        Send(tc);
        Wait(fp);
        close(fd);
      },
      [&] {
        int fd = Open();
        Wait(fc);
        Step("child", "F_SETLK F_RDLCK 0+0", Lock(fd, F_SETLK, F_RDLCK, 0, 0));
        Step("child", "F_SETLK F_WRLCK 0+0", Lock(fd, F_SETLK, F_WRLCK, 0, 0));
        Send(tp);
        Wait(fc);
        Step("child", "F_SETLK F_WRLCK 0+0 after the parent unlocked",
             Lock(fd, F_SETLK, F_WRLCK, 0, 0));
        Send(tp);
      });

  Scenario(
      "closing any descriptor of the file drops the process's fcntl locks",
      [&] {
        int fd = Open();
        Step("parent", "F_SETLK F_WRLCK 0+0", Lock(fd, F_SETLK, F_WRLCK, 0, 0));
        Send(tc);
        Wait(fp);
        int other = Open();
        close(other);
        Step("parent", "closed a second descriptor", 0);
        Send(tc);
        Wait(fp);
        close(fd);
      },
      [&] {
        int fd = Open();
        Wait(fc);
        Step("child", "F_SETLK F_WRLCK 0+0", Lock(fd, F_SETLK, F_WRLCK, 0, 0));
        Send(tp);
        Wait(fc);
        Step("child", "F_SETLK F_WRLCK 0+0", Lock(fd, F_SETLK, F_WRLCK, 0, 0));
        Send(tp);
      });

  Scenario(
      "F_SETLKW waits for the holder to release",
      [&] {
        int fd = Open();
        Step("parent", "F_SETLK F_WRLCK 0+0", Lock(fd, F_SETLK, F_WRLCK, 0, 0));
        Send(tc);
        Wait(fp);  // the child is about to wait for the lock
        // Reported only once the child is done, so the order of the lines is fixed.
        int rc = Lock(fd, F_SETLK, F_UNLCK, 0, 0);
        int e = errno;
        Wait(fp);
        errno = e;
        Step("parent", "F_SETLK F_UNLCK 0+0 (before the child got the lock)", rc);
        close(fd);
      },
      [&] {
        int fd = Open();
        Wait(fc);
        Send(tp);
        int rc = Lock(fd, F_SETLKW, F_WRLCK, 0, 0);
        Step("child", "F_SETLKW F_WRLCK 0+0", rc);
        Send(tp);
      });

  Scenario(
      "OFD locks conflict between descriptions, even in one process",
      [&] {
        int a = Open(), b = Open();
        Step("parent", "F_OFD_SETLK F_WRLCK 0+10 on description A",
             Lock(a, F_OFD_SETLK, F_WRLCK, 0, 10));
        Step("parent", "F_OFD_SETLK F_WRLCK 5+10 on description B",
             Lock(b, F_OFD_SETLK, F_WRLCK, 5, 10));
        Send(tc);
        Wait(fp);
        close(a);
        close(b);
      },
      [&] {
        int fd = Open();
        Wait(fc);
        Step("child", "F_OFD_SETLK F_RDLCK 0+1", Lock(fd, F_OFD_SETLK, F_RDLCK, 0, 1));
        Step("child", "F_OFD_SETLK F_RDLCK 10+1", Lock(fd, F_OFD_SETLK, F_RDLCK, 10, 1));
        Send(tp);
      });

  Scenario(
      "flock",
      [&] {
        int fd = Open();
        Step("parent", "flock LOCK_EX", flock(fd, LOCK_EX));
        Send(tc);
        Wait(fp);
        Step("parent", "flock LOCK_UN", flock(fd, LOCK_UN));
        Send(tc);
        Wait(fp);
        Step("parent", "flock LOCK_SH|LOCK_NB", flock(fd, LOCK_SH | LOCK_NB));
        Send(tc);
        Wait(fp);
        close(fd);
      },
      [&] {
        int fd = Open();
        Wait(fc);
        Step("child", "flock LOCK_EX|LOCK_NB", flock(fd, LOCK_EX | LOCK_NB));
        Step("child", "flock LOCK_SH|LOCK_NB", flock(fd, LOCK_SH | LOCK_NB));
        Send(tp);
        Wait(fc);
        Step("child", "flock LOCK_SH|LOCK_NB", flock(fd, LOCK_SH | LOCK_NB));
        Send(tp);
        Wait(fc);
        Step("child", "flock LOCK_EX|LOCK_NB (converting while the parent shares)",
             flock(fd, LOCK_EX | LOCK_NB));
        Send(tp);
      });
  return 0;
}
