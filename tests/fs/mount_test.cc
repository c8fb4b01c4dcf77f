// Mounting and unmounting: named sources, the mount(8)/fstab path, background start only once
// live, clean exits, and option errors.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <set>

#include "compare_fixture.h"
#include "mount_harness.h"

namespace ktmfs::fs::testing {
namespace {

int Err(long r) {
  return r < 0 ? errno : 0;
}

std::set<std::string> List(const std::string& dir) {
  std::set<std::string> names;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return names;
  while (dirent* e = readdir(d))
    names.insert(e->d_name);
  closedir(d);
  return names;
}

TEST(MountTest, NamedSourcesUnderAReadOnlyRoot) {
  KTMFS_REQUIRE_ROOT();
  TempDir t;
  std::string a = t.MakeDir("a"), b = t.MakeDir("b"), mnt = t.MakeDir("mnt");
  ASSERT_TRUE(WriteFile(a + "/x", "in a"));
  ASSERT_TRUE(WriteFile(b + "/y", "in b"));
  std::string source = "data=" + a + ":conf=" + b;
  Mount m;
  ASSERT_EQ(m.Start(source, mnt), "");
  EXPECT_EQ(List(mnt), (std::set<std::string>{".", "..", "data", "conf"}));
  EXPECT_EQ(ReadFile(mnt + "/data/x"), "in a");
  EXPECT_EQ(ReadFile(mnt + "/conf/y"), "in b");
  EXPECT_EQ(List(mnt + "/data"), (std::set<std::string>{".", "..", "x"}));  // state hidden
  struct stat st;
  EXPECT_EQ(stat((a + "/.ktmfs").c_str(), &st), 0);
  EXPECT_EQ(Err(mkdir((mnt + "/new").c_str(), 0755)), EPERM);
  EXPECT_EQ(Err(open((mnt + "/new").c_str(), O_CREAT | O_WRONLY, 0644)), EPERM);
  EXPECT_EQ(Err(rename((mnt + "/data").c_str(), (mnt + "/other").c_str())), EPERM);
  EXPECT_EQ(Err(rmdir((mnt + "/conf").c_str())), EPERM);
  EXPECT_EQ(Err(stat((mnt + "/nothing").c_str(), &st)), ENOENT);
  // Each source is its own filesystem as far as moves go (mv falls back to copying).
  EXPECT_EQ(Err(rename((mnt + "/data/x").c_str(), (mnt + "/conf/x").c_str())), EXDEV);
  EXPECT_EQ(Err(link((mnt + "/data/x").c_str(), (mnt + "/conf/x").c_str())), EXDEV);
  // Writes land in the right backing directory.
  ASSERT_TRUE(WriteFile(mnt + "/conf/z", "new"));
  EXPECT_EQ(ReadFile(b + "/z"), "new");
  struct stat root, up;
  ASSERT_EQ(stat(mnt.c_str(), &root), 0);
  ASSERT_EQ(stat((mnt + "/data/..").c_str(), &up), 0);
  EXPECT_EQ(root.st_ino, up.st_ino);
  EXPECT_TRUE(S_ISDIR(root.st_mode));
  struct statvfs vr, va;  // the virtual root reports the first source's filesystem
  ASSERT_EQ(statvfs(mnt.c_str(), &vr), 0);
  ASSERT_EQ(statvfs(a.c_str(), &va), 0);
  EXPECT_EQ(vr.f_blocks, va.f_blocks);
  std::string line = ProcMountsLine(mnt);
  EXPECT_EQ(line.rfind(source + " " + mnt + " fuse.ktmfs ", 0), 0u) << line;
  EXPECT_EQ(m.Stop(), "");
}

TEST(MountTest, SourceIsTheFsnameInProcMounts) {
  KTMFS_REQUIRE_ROOT();
  TempDir t;
  std::string src = t.MakeDir("src"), mnt = t.MakeDir("mnt");
  Mount m;
  ASSERT_EQ(m.Start(src, mnt), "");
  std::string line = ProcMountsLine(mnt);
  EXPECT_EQ(line.rfind(src + " " + mnt + " fuse.ktmfs ", 0), 0u) << line;
  EXPECT_EQ(m.Stop(), "");
  EXPECT_EQ(ProcMountsLine(mnt), "");
}

TEST(MountTest, BackgroundsOnlyOnceTheMountIsLive) {
  KTMFS_REQUIRE_ROOT();
  TempDir t;
  std::string src = t.MakeDir("src"), mnt = t.MakeDir("mnt");
  ASSERT_TRUE(WriteFile(src + "/f", "ready"));
  CommandResult r = RunCommand({KtmfsBinary(), src, mnt});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // No waiting: the command returned, so the mount must already serve requests.
  EXPECT_TRUE(IsFuseMount(mnt));
  EXPECT_EQ(ReadFile(mnt + "/f"), "ready");
  EXPECT_EQ(DaemonsFor(mnt).size(), 1u);
  CommandResult u = RunCommand({"umount", mnt});
  EXPECT_EQ(u.exit_code, 0) << u.output;
  EXPECT_TRUE(WaitNoDaemon(mnt)) << "the daemon outlived the unmount";
  EXPECT_EQ(ProcMountsLine(mnt), "");
}

// Collects failed checks inside the namespace child, where gtest assertions cannot report.
struct Checks {
  std::string failures;
  void Expect(bool ok, const std::string& what) {
    if (!ok) failures += what + "; ";
  }
};

TEST(MountTest, MountCommandAndFusermountUnmount) {
  KTMFS_REQUIRE_ROOT();
  TempDir t;
  std::string src = t.MakeDir("src"), mnt = t.MakeDir("mnt");
  std::string failures = WithKtmfsInstalled([&] {
    Checks c;
    CommandResult r = RunCommand(
        {"mount", "-t", "fuse.ktmfs", src, mnt, "-o", "allow_other,default_permissions"});
    c.Expect(r.exit_code == 0, "mount -t fuse.ktmfs failed: " + r.output);
    if (r.exit_code != 0) return c.failures;
    c.Expect(IsFuseMount(mnt), "not mounted after mount(8) returned");
    std::string line = ProcMountsLine(mnt);
    c.Expect(line.rfind(src + " " + mnt + " fuse.ktmfs ", 0) == 0, "proc mounts: " + line);
    c.Expect(line.find("allow_other") != std::string::npos, "no allow_other: " + line);
    c.Expect(line.find("default_permissions") != std::string::npos, "no default_permissions");
    c.Expect(WriteFile(mnt + "/f", "via mount(8)"), "write failed");
    c.Expect(ReadFile(src + "/f") == "via mount(8)", "the write did not reach the source");
    // A remount (what mount(8)'s helper runs for `mount -o remount,ro`) changes the live
    // mount and starts no second daemon.
    CommandResult ro = RunCommand({KtmfsBinary(), "-o", "rw,remount,ro", src, mnt});
    c.Expect(ro.exit_code == 0, "ktmfs -o remount,ro failed: " + ro.output);
    c.Expect(ProcMountsLine(mnt).find(" ro,") != std::string::npos,
             "not read-only after remount,ro: " + ProcMountsLine(mnt));
    c.Expect(!WriteFile(mnt + "/g", "refused"), "a write went through a read-only mount");
    c.Expect(DaemonsFor(mnt).size() == 1, "not exactly one daemon");
    CommandResult rw = RunCommand({KtmfsBinary(), "-o", "ro,remount,rw", src, mnt});
    c.Expect(rw.exit_code == 0, "ktmfs -o remount,rw failed: " + rw.output);
    c.Expect(WriteFile(mnt + "/g", "read-write again"), "a write failed after remount,rw");
    CommandResult u = RunCommand({"fusermount3", "-u", mnt});
    c.Expect(u.exit_code == 0, "fusermount3 -u failed: " + u.output);
    c.Expect(WaitNoDaemon(mnt), "the daemon outlived the unmount");
    Unmount(mnt);
    return c.failures;
  });
  EXPECT_EQ(failures, "");
  EXPECT_TRUE(DaemonsFor(mnt).empty());
}

TEST(MountTest, FstabEntry) {
  KTMFS_REQUIRE_ROOT();
  TempDir t;
  std::string src = t.MakeDir("src"), mnt = t.MakeDir("mnt"), state = t.Sub("state");
  std::string fstab = t.Sub("fstab");
  ASSERT_TRUE(WriteFile(
      fstab, src + " " + mnt + " fuse.ktmfs defaults,state=" + state + ",log=dedicated 0 0\n"));
  std::string failures = WithKtmfsInstalled([&] {
    Checks c;
    CommandResult r = RunCommand({"mount", "-T", fstab, mnt});
    c.Expect(r.exit_code == 0, "mount from fstab failed: " + r.output);
    if (r.exit_code != 0) return c.failures;
    c.Expect(IsFuseMount(mnt), "not mounted");
    struct stat st;
    c.Expect(stat(state.c_str(), &st) == 0 && (st.st_mode & 07777) == 0700,
             "state directory missing or not 0700");
    // log=dedicated: the source's own .ktmfs exists and is hidden.
    c.Expect(stat((src + "/.ktmfs").c_str(), &st) == 0, "no .ktmfs in the source");
    c.Expect(List(mnt) == std::set<std::string>{".", ".."}, "the state is visible");
    CommandResult u = RunCommand({"umount", mnt});
    c.Expect(u.exit_code == 0, "umount failed: " + u.output);
    c.Expect(WaitNoDaemon(mnt), "the daemon outlived the unmount");
    Unmount(mnt);
    return c.failures;
  });
  EXPECT_EQ(failures, "");
  EXPECT_TRUE(DaemonsFor(mnt).empty());
}

TEST(MountTest, SigtermUnmountsAndExitsCleanly) {
  KTMFS_REQUIRE_ROOT();
  TempDir t;
  std::string src = t.MakeDir("src"), mnt = t.MakeDir("mnt");
  Mount m;
  ASSERT_EQ(m.Start(src, mnt), "");
  ASSERT_EQ(kill(m.pid(), SIGTERM), 0);
  EXPECT_EQ(m.WaitExit(), "");
  EXPECT_EQ(ProcMountsLine(mnt), "");
}

TEST(MountTest, BadOptionsAreRefusedAndNothingIsMounted) {
  KTMFS_REQUIRE_ROOT();
  TempDir t;
  std::string src = t.MakeDir("src"), mnt = t.MakeDir("mnt");
  struct Case {
    std::vector<std::string> args;
    std::string mentions;
  };
  std::vector<Case> cases = {
      {{"-o", "no_such_option"}, "no_such_option"},
      {{"-o", "log=sideways"}, "log=sideways"},
      {{"-o", "attr_timeout=soon"}, "attr_timeout=soon"},
      // A remount of a directory where no ktmfs is mounted.
      {{"-o", "remount,ro"}, "nothing is mounted on"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> argv = {KtmfsBinary()};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    argv.push_back(src);
    argv.push_back(mnt);
    CommandResult r = RunCommand(argv);
    EXPECT_NE(r.exit_code, 0) << c.mentions;
    EXPECT_NE(r.output.find(c.mentions), std::string::npos) << r.output;
    EXPECT_EQ(ProcMountsLine(mnt), "");
    // Refused before anything is created in the backing directory.
    EXPECT_NE(access((src + "/.ktmfs").c_str(), F_OK), 0) << c.mentions;
  }
  CommandResult missing = RunCommand({KtmfsBinary(), t.Sub("absent"), mnt});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.output.find(t.Sub("absent")), std::string::npos) << missing.output;
  CommandResult usage = RunCommand({KtmfsBinary(), src});
  EXPECT_NE(usage.exit_code, 0);
  EXPECT_EQ(ProcMountsLine(mnt), "");
}

TEST(MountTest, MountpointInsideTheSourceIsInvisible) {
  KTMFS_REQUIRE_ROOT();
  TempDir t;
  std::string src = t.MakeDir("src"), mnt = t.MakeDir("src/mnt");
  ASSERT_TRUE(WriteFile(src + "/f", "x"));
  Mount m;
  ASSERT_EQ(m.Start(src, mnt), "");
  // Without the rule, looking up "mnt" would make the daemon open its own mountpoint.
  // (mnt.log is the harness's log of the daemon, next to the mountpoint.)
  EXPECT_EQ(List(mnt), (std::set<std::string>{".", "..", "f", "mnt.log"}));
  struct stat st;
  EXPECT_EQ(Err(stat((mnt + "/mnt").c_str(), &st)), ENOENT);
  EXPECT_EQ(m.Stop(), "");
}

TEST(MountTest, HelpAndVersion) {
  CommandResult h = RunCommand({KtmfsBinary(), "--help"});
  EXPECT_EQ(h.exit_code, 0);
  EXPECT_NE(h.output.find("SOURCE MOUNTPOINT"), std::string::npos) << h.output;
  EXPECT_NE(h.output.find("state=DIR"), std::string::npos) << h.output;
  CommandResult v = RunCommand({KtmfsBinary(), "--version"});
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_EQ(v.output.rfind("ktmfs ", 0), 0u) << v.output;
}

}  // namespace
}  // namespace ktmfs::fs::testing
