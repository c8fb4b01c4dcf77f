#include "tests/bench/tx_pair_writers.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>

#include "ktmfs.h"

namespace ktmfs::bench {
namespace {

const char* const kNames[2] = {"a", "b"};

std::string ErrnoMessage(const std::string& what, int err) {
  return what + ": " + std::strerror(err);
}

std::string ClientDir(const std::string& root, int client) {
  char name[16];
  std::snprintf(name, sizeof name, "/c%03d", client);
  return root + name;
}

std::string WriteAt(int fd, const Blob& blob, const std::string& what) {
  size_t done = 0;
  while (done < blob.size()) {
    ssize_t n = pwrite(fd, blob.data() + done, blob.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoMessage("write " + what, errno);
    done += static_cast<size_t>(n);
  }
  return "";
}

std::string ReadFile(int dirfd, const std::string& dir, const char* name, Blob* out) {
  std::string what = dir + "/" + name;
  int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoMessage("open " + what, errno);
  out->assign(kBlobSize, 0);
  ssize_t n = pread(fd, out->data(), out->size(), 0);
  int err = errno;
  close(fd);
  if (n < 0) return ErrnoMessage("read " + what, err);
  out->resize(static_cast<size_t>(n));
  return "";
}

// Creates (or replaces in place) a file with `blob`, durably, without any atomicity: only
// used to give every system the same starting point before the timed part.
std::string WriteInitial(int dirfd, const std::string& dir, const char* name, const Blob& blob) {
  std::string what = dir + "/" + name;
  int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoMessage("create " + what, errno);
  std::string error = WriteAt(fd, blob, what);
  if (error.empty() && fsync(fd) != 0) error = ErrnoMessage("fsync " + what, errno);
  close(fd);
  if (error.empty() && fsync(dirfd) != 0) error = ErrnoMessage("fsync " + dir, errno);
  return error;
}

// A client's own directory, held open: its files are named relative to it.
class ClientDirectory {
 public:
  ~ClientDirectory() {
    if (fd_ >= 0) close(fd_);
  }
  std::string Open(const std::string& path) {
    path_ = path;
    fd_ = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return fd_ < 0 ? ErrnoMessage("open " + path, errno) : "";
  }
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

// The careful way without transactions: each file is replaced by writing a temporary file,
// fsyncing it, renaming it over the old name and fsyncing the directory. Each file is durable
// and never torn, but a crash between the two leaves one new and one old.
class PosixPairWriter : public PairWriter {
 public:
  std::string Open(const std::string& root, int client) {
    std::string error = dir_.Open(ClientDir(root, client));
    for (int i = 0; i < 2 && error.empty(); ++i) {
      error = WriteInitial(dir_.fd(), dir_.path(), kNames[i], StampedBlob(client, i, 0));
    }
    return error;
  }
  std::string Commit(const Blob& a, const Blob& b) override {
    std::string error = Replace(kNames[0], a);
    return error.empty() ? Replace(kNames[1], b) : error;
  }
  std::string ReadBack(Blob* a, Blob* b) override {
    std::string error = ReadFile(dir_.fd(), dir_.path(), kNames[0], a);
    return error.empty() ? ReadFile(dir_.fd(), dir_.path(), kNames[1], b) : error;
  }

 private:
  std::string Replace(const char* name, const Blob& blob) {
    std::string temp = std::string(name) + ".tmp";
    std::string what = dir_.path() + "/" + temp;
    int fd = openat(dir_.fd(), temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoMessage("create " + what, errno);
    std::string error = WriteAt(fd, blob, what);
    if (error.empty() && fsync(fd) != 0) error = ErrnoMessage("fsync " + what, errno);
    if (close(fd) != 0 && error.empty()) error = ErrnoMessage("close " + what, errno);
    if (error.empty() && renameat(dir_.fd(), temp.c_str(), dir_.fd(), name) != 0) {
      error = ErrnoMessage("rename " + what, errno);
    }
    if (error.empty() && fsync(dir_.fd()) != 0) error = ErrnoMessage("fsync " + dir_.path(), errno);
    return error;
  }

  ClientDirectory dir_;
};

// One transaction per commit, bound to the calling thread: open and write both files inside
// it, then commit (which returns once durable). Two ways: a program's (ioctls; pwrite into the
// file as it is), and a script's (the control xattrs, as setfattr sets them; each file opened
// with O_TRUNC and written whole, as `>` does).
class KtmfsPairWriter : public PairWriter {
 public:
  explicit KtmfsPairWriter(bool script = false) : script_(script) {}
  std::string Open(const std::string& root, int client) {
    client_ = client;
    std::string error = dir_.Open(ClientDir(root, client));
    for (int i = 0; i < 2 && error.empty(); ++i) {
      error = WriteInitial(dir_.fd(), dir_.path(), kNames[i], StampedBlob(client, i, 0));
    }
    return error;
  }
  std::string Commit(const Blob& a, const Blob& b) override {
    char id[KTMFS_ID_SIZE] = {};
    int rc = Begin(id);
    if (rc < 0) return ErrnoMessage("begin a transaction in " + dir_.path(), -rc);
    std::string error = WriteInTransaction(kNames[0], a);
    if (error.empty()) error = WriteInTransaction(kNames[1], b);
    if (error.empty() && !checked_) {
      error = CheckIsolated(id);
      checked_ = true;
    }
    if (!error.empty()) {
      rc = End(id, false);
      if (rc < 0) error += "; " + ErrnoMessage(std::string("roll back transaction ") + id, -rc);
      return error + " (transaction " + id + ")";
    }
    rc = End(id, true);
    if (rc < 0)
      return ErrnoMessage(std::string("commit transaction ") + id + " in " + dir_.path(), -rc);
    return "";
  }
  std::string ReadBack(Blob* a, Blob* b) override {
    std::string error = ReadFile(dir_.fd(), dir_.path(), kNames[0], a);
    return error.empty() ? ReadFile(dir_.fd(), dir_.path(), kNames[1], b) : error;
  }

 private:
  // Fills `id` (the script way asks for it only once, for CheckIsolated).
  int Begin(char* id) {
    if (!script_) return ktmfs_begin(dir_.fd(), KTMFS_SCOPE_THREAD, 0, 0, "tx_bench", id);
    const char value[] = "scope=thread name=tx_bench";
    if (fsetxattr(dir_.fd(), KTMFS_XATTR_BEGIN, value, sizeof value - 1, 0) != 0) return -errno;
    if (checked_) return 0;
    ssize_t n = fgetxattr(dir_.fd(), KTMFS_XATTR_TX, id, KTMFS_ID_SIZE - 1);
    return n < 0 ? -errno : 0;
  }
  int End(const char* id, bool commit) {
    if (!script_) return commit ? ktmfs_commit(dir_.fd(), id) : ktmfs_rollback(dir_.fd(), id);
    const char* name = commit ? KTMFS_XATTR_COMMIT : KTMFS_XATTR_ROLLBACK;
    return fsetxattr(dir_.fd(), name, "", 0, 0) == 0 ? 0 : -errno;
  }

  std::string WriteInTransaction(const char* name, const Blob& blob) {
    std::string what = dir_.path() + "/" + name;
    int fd =
        openat(dir_.fd(), name, O_WRONLY | O_CLOEXEC | (script_ ? O_CREAT | O_TRUNC : 0), 0644);
    if (fd < 0) return ErrnoMessage("open " + what, errno);
    std::string error = WriteAt(fd, blob, what);
    if (close(fd) != 0 && error.empty()) error = ErrnoMessage("close " + what, errno);
    return error;
  }

  // Once per client, so the rows cannot be fast by writing outside any transaction: the
  // written file is held by the transaction, and another thread (not bound to it) still reads
  // the content of the commit before.
  std::string CheckIsolated(const char* id) {
    std::string what = dir_.path() + "/" + kNames[0];
    int fd = openat(dir_.fd(), kNames[0], O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoMessage("open " + what, errno);
    char holder[KTMFS_ID_SIZE] = {};
    int rc = ktmfs_holder(fd, holder);
    close(fd);
    if (rc < 0) return ErrnoMessage("holder of " + what + " in transaction " + id, -rc);
    if (std::strcmp(holder, id) != 0) {
      return what + " is held by " + holder + ", not by its writer's transaction " + id;
    }
    Blob outside;
    std::string error;
    std::thread([&] { error = ReadFile(dir_.fd(), dir_.path(), kNames[0], &outside); }).join();
    if (error.empty() && outside != StampedBlob(client_, 0, 0)) {
      error = "another thread sees " + what + " change before transaction " + id + " commits";
    }
    return error;
  }

  const bool script_;
  int client_ = 0;
  bool checked_ = false;
  ClientDirectory dir_;
};

std::string SqlitePath(const std::string& root) {
  return root + "/tx.db";
}

std::string SqliteMessage(sqlite3* db, const std::string& what) {
  return what + ": " + (db ? sqlite3_errmsg(db) : "out of memory");
}

// SQLite lets one writer at a time into a database; its busy handler makes the others sleep
// and retry, which would understate it. The writers take turns on this mutex instead, as a
// program sharing one database between threads would.
std::mutex sqlite_writer_turn;

// Both blobs in one SQLite transaction: one database shared by every client, each client its
// own connection and its own two rows, WAL journal, synchronous=FULL (the WAL is fsynced at
// each commit).
class SqlitePairWriter : public PairWriter {
 public:
  ~SqlitePairWriter() override {
    for (sqlite3_stmt* s : {begin_, update_, commit_, rollback_, select_})
      sqlite3_finalize(s);
    sqlite3_close(db_);
  }
  std::string Open(const std::string& root, int client) {
    client_ = client;
    path_ = SqlitePath(root);
    if (sqlite3_open_v2(path_.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                        nullptr) != SQLITE_OK) {
      return SqliteMessage(db_, "open " + path_);
    }
    // The busy timeout first: a connection's first statement reads the schema, which can find
    // the database busy while another client's commit or checkpoint runs ("database is locked").
    sqlite3_busy_timeout(db_, 60000);
    if (sqlite3_exec(db_, "PRAGMA synchronous=FULL;", nullptr, nullptr, nullptr) != SQLITE_OK) {
      return SqliteMessage(db_, "configure " + path_);
    }
    std::string error = Prepare("BEGIN IMMEDIATE", &begin_);
    if (error.empty())
      error = Prepare("UPDATE blobs SET data=?1 WHERE client=?2 AND slot=?3", &update_);
    if (error.empty()) error = Prepare("COMMIT", &commit_);
    if (error.empty()) error = Prepare("ROLLBACK", &rollback_);
    if (error.empty())
      error = Prepare("SELECT data FROM blobs WHERE client=?1 AND slot=?2", &select_);
    if (!error.empty()) return error;
    std::lock_guard<std::mutex> turn(sqlite_writer_turn);
    sqlite3_stmt* insert = nullptr;
    error = Prepare("INSERT OR REPLACE INTO blobs(client, slot, data) VALUES(?1, ?2, ?3)", &insert);
    for (int slot = 0; slot < 2 && error.empty(); ++slot) {
      Blob blob = StampedBlob(client, slot, 0);
      sqlite3_bind_int(insert, 1, client);
      sqlite3_bind_int(insert, 2, slot);
      sqlite3_bind_blob(insert, 3, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
      if (sqlite3_step(insert) != SQLITE_DONE) error = SqliteMessage(db_, "insert into " + path_);
      sqlite3_reset(insert);
    }
    sqlite3_finalize(insert);
    return error;
  }
  std::string Commit(const Blob& a, const Blob& b) override {
    std::lock_guard<std::mutex> turn(sqlite_writer_turn);
    std::string error = Step(begin_, "begin in " + path_);
    if (!error.empty()) return error;
    error = Update(0, a);
    if (error.empty()) error = Update(1, b);
    if (error.empty()) error = Step(commit_, "commit in " + path_);
    if (!error.empty()) (void)Step(rollback_, "rollback in " + path_);
    return error;
  }
  std::string ReadBack(Blob* a, Blob* b) override {
    std::string error = Select(0, a);
    return error.empty() ? Select(1, b) : error;
  }

 private:
  std::string Prepare(const char* sql, sqlite3_stmt** out) {
    if (sqlite3_prepare_v2(db_, sql, -1, out, nullptr) != SQLITE_OK) {
      return SqliteMessage(db_, std::string("prepare \"") + sql + "\" on " + path_);
    }
    return "";
  }
  std::string Step(sqlite3_stmt* s, const std::string& what) {
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? "" : SqliteMessage(db_, what);
  }
  std::string Update(int slot, const Blob& blob) {
    sqlite3_bind_blob(update_, 1, blob.data(), static_cast<int>(blob.size()), SQLITE_STATIC);
    sqlite3_bind_int(update_, 2, client_);
    sqlite3_bind_int(update_, 3, slot);
    std::string error = Step(update_, "update in " + path_);
    sqlite3_clear_bindings(update_);
    if (error.empty() && sqlite3_changes(db_) != 1) {
      error = "update in " + path_ + ": client " + std::to_string(client_) + " slot " +
              std::to_string(slot) + " has no row";
    }
    return error;
  }
  std::string Select(int slot, Blob* out) {
    sqlite3_bind_int(select_, 1, client_);
    sqlite3_bind_int(select_, 2, slot);
    std::string error;
    if (sqlite3_step(select_) == SQLITE_ROW) {
      const char* data = static_cast<const char*>(sqlite3_column_blob(select_, 0));
      out->assign(data, data + sqlite3_column_bytes(select_, 0));
    } else {
      error = SqliteMessage(db_, "select from " + path_);
    }
    sqlite3_reset(select_);
    return error;
  }

  int client_ = 0;
  std::string path_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* begin_ = nullptr;
  sqlite3_stmt* update_ = nullptr;
  sqlite3_stmt* commit_ = nullptr;
  sqlite3_stmt* rollback_ = nullptr;
  sqlite3_stmt* select_ = nullptr;
};

std::string PrepareSqlite(const std::string& root) {
  std::string path = SqlitePath(root);
  sqlite3* db = nullptr;
  std::string error;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) {
    error = SqliteMessage(db, "create " + path);
  } else {
    // journal_mode=WAL is stored in the database, so every later connection uses it.
    const char* schema =
        "PRAGMA journal_mode=WAL;"
        "CREATE TABLE blobs(client INTEGER NOT NULL, slot INTEGER NOT NULL, data BLOB NOT NULL,"
        " PRIMARY KEY(client, slot));";
    if (sqlite3_exec(db, schema, nullptr, nullptr, nullptr) != SQLITE_OK) {
      error = SqliteMessage(db, "create the table in " + path);
    }
  }
  sqlite3_close(db);
  return error;
}

template <typename Writer, typename... Args>
std::string OpenWriter(const std::string& root, int client, std::unique_ptr<PairWriter>* out,
                       Args... args) {
  auto writer = std::make_unique<Writer>(args...);
  std::string error = writer->Open(root, client);
  if (error.empty()) *out = std::move(writer);
  return error;
}

}  // namespace

Blob StampedBlob(int client, int slot, unsigned long commit) {
  char line[64];
  int n = std::snprintf(line, sizeof line, "client %d file %d commit %lu\n", client, slot, commit);
  Blob blob(kBlobSize);
  for (size_t i = 0; i < blob.size(); ++i)
    blob[i] = line[i % static_cast<size_t>(n)];
  return blob;
}

std::string PreparePairs(PairSystem system, const std::string& root, int clients) {
  if (system == PairSystem::kSqlite) return PrepareSqlite(root);
  for (int c = 0; c < clients; ++c) {
    std::string dir = ClientDir(root, c);
    if (mkdir(dir.c_str(), 0755) != 0) return ErrnoMessage("mkdir " + dir, errno);
  }
  return "";
}

std::string OpenPairWriter(PairSystem system, const std::string& root, int client,
                           std::unique_ptr<PairWriter>* out) {
  switch (system) {
    case PairSystem::kKtmfs:
      return OpenWriter<KtmfsPairWriter>(root, client, out);
    case PairSystem::kKtmfsScript:
      return OpenWriter<KtmfsPairWriter>(root, client, out, true);
    case PairSystem::kPosix:
      return OpenWriter<PosixPairWriter>(root, client, out);
    case PairSystem::kSqlite:
      return OpenWriter<SqlitePairWriter>(root, client, out);
  }
  return "unknown system";
}

std::string ProbeKtmfsTransactions(const std::string& root) {
  ClientDirectory dir;
  std::string error = dir.Open(root);
  if (!error.empty()) return error;
  struct statfs sfs;
  if (fstatfs(dir.fd(), &sfs) != 0) return ErrnoMessage("statfs " + root, errno);
  if (static_cast<uint32_t>(sfs.f_type) != KTMFS_FUSE_SUPER_MAGIC) {
    return root + " is not a ktmfs mount";
  }
  char id[KTMFS_ID_SIZE] = {};
  int rc = ktmfs_begin(dir.fd(), KTMFS_SCOPE_THREAD, 0, 0, "tx_bench probe", id);
  if (rc < 0) {
    return ErrnoMessage("ktmfs does not serve transactions on this build (begin on " + root + ")",
                        -rc);
  }
  rc = ktmfs_rollback(dir.fd(), id);
  if (rc < 0) return ErrnoMessage(std::string("roll back probe transaction ") + id, -rc);
  return "";
}

}  // namespace ktmfs::bench
