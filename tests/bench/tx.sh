#!/usr/bin/env bash
# Transaction benchmark: ktmfs transactions against the alternatives, side by side in one run,
# reported as ratios (never as pass/fail).
#   tests/bench/tx.sh [BUILD_DIR]     (default: build; builds nothing: ninja -C build fs/ktmfs
#                                      tests/bench/tx_bench first)
# Rows:
#   small, 1 and 16 clients: each client commits 4 KiB to each of its own two files, over and
#     over (commits/s); against the careful POSIX way per file (write temp, fsync, rename, fsync
#     directory) on the native directory, and SQLite (WAL, synchronous=FULL, both blobs in one
#     transaction). Targets: at 16 clients >= 2x both, at 1 client >= 1x POSIX. Two ktmfs ways:
#     a program's (ioctls, pwrite into the files as they are) and a script's ("script": the
#     control xattrs, each file opened with O_TRUNC and written whole, as `>` does).
#   big, new file and existing file: one transaction writes BIG_BYTES in 1 MiB writes and
#     commits (seconds); against native write + fsync of the same data. Target <= 1.3x. Shown
#     under it without a target: the same write + fsync through the mount outside any
#     transaction (passed through to the backing file where the kernel can), and through a
#     second mount with -o nopassthrough, where the daemon serves every write as it serves a
#     transaction's: the floor the FUSE transport sets. Target for the transaction against that
#     floor: <= 1.1x.
#   reader: the worst time a reader outside transactions takes to stat, open, read 4 KiB of and
#     close a file no transaction touches, while a commit overwrites an existing file of
#     BIG_BYTES, and beside it over 3 s with no commit running (milliseconds). Target: <= 20 ms
#     during the commit. Again with the reader inside a transaction of its own, and the commit
#     leaving the file's first 4 KiB as they were, so that apply writes it in place. Again with
#     the reader outside reading the file that commit writes in place, which it is served from
#     the transaction's staging meanwhile; and with that reader inside a transaction of its own.
# Every repetition runs every row once, the systems of a row back to back (the small rows in
# SLICES slices of SECONDS_PER_ROW/SLICES each, the systems taking turns), so a change in the
# machine's load hits them alike; the table gives medians, the range over repetitions, and the
# load average.
# Environment: SECONDS_PER_ROW (default 5), SLICES (default 5), BIG_BYTES (default 1G; K, M, G
# suffixes), REPEAT (default 3), CLIENTS (default "1 16"), ROW_TIMEOUT (default 600 s: a row
# that takes longer is stopped and reported failed), BENCH_DIR (default a new directory under
# /tmp; the native directory and the mount's backing directory are both in it, so on the same
# disk), KTMFS_OPTIONS (default none: mount options for both mounts, e.g. "nouring" or
# "nopassthrough", to see what a transport feature buys; the transport taken is printed).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
ktmfs=$(pwd)/$build/fs/ktmfs
driver=$(pwd)/$build/tests/bench/tx_bench
for exe in "$ktmfs" "$driver"; do
  if [ ! -x "$exe" ]; then
    echo "tx.sh: $exe not built (ninja -C $build fs/ktmfs tests/bench/tx_bench)" >&2
    exit 2
  fi
done
seconds=${SECONDS_PER_ROW:-5}
slices=${SLICES:-5}
slice_seconds=$(python3 -c "print($seconds / $slices)")
big_bytes=${BIG_BYTES:-1G}
repeat=${REPEAT:-3}
client_counts=${CLIENTS:-1 16}
row_timeout=${ROW_TIMEOUT:-600}
work=${BENCH_DIR:-$(mktemp -d /tmp/ktmfs-txbench-XXXXXX)}
native=$work/native
backing=$work/backing
mnt=$work/mnt
# The second mount: no passthrough, so the daemon serves every write.
served_backing=$work/served-backing
served_mnt=$work/served-mnt

daemon= served_daemon=
# unmount MNT PID: unmounts MNT, then waits for its daemon PID to exit (killing it if hung).
unmount() {
  local mnt=$1 pid=$2
  if grep -q " $mnt fuse" /proc/mounts; then
    fusermount3 -u "$mnt" || umount -l "$mnt" || echo "tx.sh: could not unmount $mnt" >&2
  fi
  if [ -n "$pid" ]; then
    # It exits by itself once unmounted; only a hung daemon is killed.
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "tx.sh: ktmfs (pid $pid) still running after unmount; killing it" >&2
      kill -KILL "$pid"
    fi
    wait "$pid" 2>/dev/null || true
  fi
}
cleanup() {
  unmount "$mnt" "$daemon"
  unmount "$served_mnt" "$served_daemon"
  rm -rf "$native" "$backing" "$served_backing" "$work/results" "$work/err" "$work/daemon.log" \
    "$work/served-daemon.log"
  rmdir "$mnt" "$served_mnt" "$work" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$native" "$backing" "$mnt" "$served_backing" "$served_mnt"
: >"$work/results"
# mount BACKING MNT LOG [OPTIONS]: in the foreground (-f) as a child of this script, so its exit
# can be awaited; sets mounted_pid.
mount_ktmfs() {
  local backing=$1 mnt=$2 log=$3
  shift 3
  "$ktmfs" -f "$@" "$backing" "$mnt" 2>"$log" &
  mounted_pid=$!
  for _ in $(seq 300); do
    mountpoint -q "$mnt" && return 0
    if ! kill -0 "$mounted_pid" 2>/dev/null; then
      cat "$log" >&2
      mounted_pid=
      echo "tx.sh: ktmfs did not mount $mnt" >&2
      exit 1
    fi
    sleep 0.1
  done
  cat "$log" >&2
  echo "tx.sh: $mnt not mounted after 30 s" >&2
  exit 1
}
extra=${KTMFS_OPTIONS:+,$KTMFS_OPTIONS}
mount_ktmfs "$backing" "$mnt" "$work/daemon.log" ${KTMFS_OPTIONS:+-o "$KTMFS_OPTIONS"}
daemon=$mounted_pid
mount_ktmfs "$served_backing" "$served_mnt" "$work/served-daemon.log" -o "nopassthrough$extra"
served_daemon=$mounted_pid
# What INIT took (passthrough, FUSE over io_uring), as the daemon reports it.
sed -n 's/^ktmfs: kernel FUSE/transport: kernel FUSE/p' "$work/daemon.log" | head -n 1
echo "native directory: $native; ktmfs (pid $daemon): $backing on $mnt"
echo "ktmfs -o nopassthrough (pid $served_daemon): $served_backing on $served_mnt"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"

ktmfs_reason=
set +e
timeout -k 10 60 "$driver" probe "$mnt" 2>"$work/err"
rc=$?
set -e
case $rc in
  0) ;;
  3)
    ktmfs_reason=$(sed 's/^tx_bench: //' "$work/err")
    echo "$ktmfs_reason: its rows are not run"
    ;;
  *) cat "$work/err" >&2; exit 1 ;;
esac

# A commit returns once durable, but the daemon may go on applying it to the backing files.
# Before the next row, wait until its CPU time stops growing (at most 60 s), so that work is
# not charged to whichever row runs next.
settle() {
  local before after waited=0
  [ -n "$daemon" ] || return 0
  after=$(awk '{print $14 + $15}' "/proc/$daemon/stat")
  while [ "$waited" -lt 300 ]; do
    before=$after
    sleep 0.2
    waited=$((waited + 1))
    after=$(awk '{print $14 + $15}' "/proc/$daemon/stat")
    [ "$after" = "$before" ] && break
  done
  [ "$waited" -le 2 ] || echo "  (ktmfs busy for $((waited / 5)) s after the row)"
}

failed=0
# on_mount SYSTEM: whether the system's rows run through a ktmfs mount.
on_mount() { [ "$1" = ktmfs ] || [ "$1" = script ] || [ "$1" = mount ] || [ "$1" = served ]; }

# row KEY SYSTEM DIR ARGS...: one measurement in a new directory DIR; appends "KEY SYSTEM
# REP VALUE" (VALUE "-" if not run, "failed" if it failed) to the results.
row() {
  local key=$1 system=$2 dir=$3 value rc
  shift 3
  printf '  %-16s %-7s ' "$key" "$system"
  if on_mount "$system" && [ -n "$ktmfs_reason" ]; then
    echo "not run"
    echo "$key $system $rep -" >>"$work/results"
    return
  fi
  mkdir "$dir"
  set +e
  value=$(timeout -k 10 "$row_timeout" "$driver" "$@" 2>"$work/err")
  rc=$?
  set -e
  case $rc in
    0) echo "$value" ;;
    3) value=-; echo "not run: $(sed 's/^tx_bench: //' "$work/err")" ;;
    124 | 137) value=failed; failed=1; echo "FAILED: no result after $row_timeout s" ;;
    *) value=failed; failed=1; echo "FAILED: $(sed 's/^tx_bench: //' "$work/err")" ;;
  esac
  echo "$key $system $rep $value" >>"$work/results"
  rm -rf "$dir"
  ! on_mount "$system" || settle
  sync
}

for rep in $(seq "$repeat"); do
  echo "repetition $rep/$repeat (load $(cut -d' ' -f1 /proc/loadavg))"
  for n in $client_counts; do
    # In short slices, the systems taking turns, so that a burst of disk traffic from others
    # hits all three rather than whichever ran during it.
    for _ in $(seq "$slices"); do
      row "small-$n" ktmfs "$mnt/small" small ktmfs "$mnt/small" "$n" "$slice_seconds"
      row "small-$n" script "$mnt/small" small ktmfs-script "$mnt/small" "$n" "$slice_seconds"
      row "small-$n" posix "$native/small" small posix "$native/small" "$n" "$slice_seconds"
      row "small-$n" sqlite "$native/small" small sqlite "$native/small" "$n" "$slice_seconds"
    done
  done
  for target in new existing; do
    # On a VM, writing into memory just freed is much faster than into memory the host took
    # back. Each system writes into what the one before it freed when its file was removed; the
    # first writes into what this file frees. Which goes first alternates too.
    head -c "$big_bytes" /dev/zero >"$native/warm" && rm -f "$native/warm" && sync
    if [ $((rep % 2)) -eq 1 ]; then
      row "big-$target" ktmfs "$mnt/big" big ktmfs "$mnt/big" "$big_bytes" "$target"
      row "big-$target" native "$native/big" big native "$native/big" "$big_bytes" "$target"
      row "big-$target" mount "$mnt/big" big native "$mnt/big" "$big_bytes" "$target"
      row "big-$target" served "$served_mnt/big" big native "$served_mnt/big" "$big_bytes" "$target"
    else
      row "big-$target" served "$served_mnt/big" big native "$served_mnt/big" "$big_bytes" "$target"
      row "big-$target" mount "$mnt/big" big native "$mnt/big" "$big_bytes" "$target"
      row "big-$target" native "$native/big" big native "$native/big" "$big_bytes" "$target"
      row "big-$target" ktmfs "$mnt/big" big ktmfs "$mnt/big" "$big_bytes" "$target"
    fi
  done
  row reader-commit ktmfs "$mnt/reader" reader "$mnt/reader" "$big_bytes" commit
  row reader-idle ktmfs "$mnt/reader" reader "$mnt/reader" "$big_bytes" idle
  row reader-inside-commit ktmfs "$mnt/reader" reader "$mnt/reader" "$big_bytes" commit inside
  row reader-inside-idle ktmfs "$mnt/reader" reader "$mnt/reader" "$big_bytes" idle inside
  row reader-same-commit ktmfs "$mnt/reader" reader "$mnt/reader" "$big_bytes" commit same
  row reader-same-idle ktmfs "$mnt/reader" reader "$mnt/reader" "$big_bytes" idle same
  row reader-same-inside-commit ktmfs "$mnt/reader" reader "$mnt/reader" "$big_bytes" commit \
    same-inside
  row reader-same-inside-idle ktmfs "$mnt/reader" reader "$mnt/reader" "$big_bytes" idle \
    same-inside
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$work/results" "$big_bytes" "$ktmfs_reason" "$repeat" <<'PY'
import statistics, sys
results, big_bytes, reason, repeat = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
# (key, system) -> one value per repetition ("-" or "failed" where not measured): the mean of
# its slices (equal durations, so the mean rate is the rate over the whole row).
slices = {}
for line in open(results):
    key, system, rep, value = line.split()
    slices.setdefault((key, system), {}).setdefault(int(rep), []).append(value)
runs = {}
for ks, reps in slices.items():
    for rep in sorted(reps):
        vs = reps[rep]
        if "failed" in vs:
            v = "failed"
        elif "-" in vs:
            v = "-"
        else:
            v = repr(statistics.fmean(float(x) for x in vs))
        runs.setdefault(ks, []).append(v)

def numbers(values):
    return [float(v) for v in values if v not in ("-", "failed")]

def cell(values, fmt):
    xs = numbers(values)
    if not xs:
        return "failed" if "failed" in values else "not run"
    text = fmt % statistics.median(xs)
    return text if len(xs) == 1 else text + " (" + fmt % min(xs) + ".." + fmt % max(xs) + ")"

def ratio(ktmfs, base):
    # Per repetition, so both sides of a ratio ran under the same load.
    rs = [float(k) / float(b) for k, b in zip(ktmfs, base)
          if k not in ("-", "failed") and b not in ("-", "failed") and float(b) > 0]
    if not rs:
        return None, "-"
    text = "%.2fx" % statistics.median(rs)
    if len(rs) > 1:
        text += " (%.2f..%.2f)" % (min(rs), max(rs))
    return statistics.median(rs), text

# (key, label, system, unit, baseline, target ratio, higher is better)
rows = []
for key in sorted({k for k, _ in runs if k.startswith("small-")}, key=lambda k: int(k[6:])):
    n = int(key[6:])
    label = "2 x 4 KiB, %d client%s" % (n, "" if n == 1 else "s")
    # The targets are set for 1 and 16 clients; other counts are shown without one.
    rows.append((key, label, "ktmfs", "commits/s", "posix", {1: 1.0, 16: 2.0}.get(n), True))
    rows.append((key, label, "ktmfs", "commits/s", "sqlite", {16: 2.0}.get(n), True))
    label += ", script"
    rows.append((key, label, "script", "commits/s", "posix", {1: 1.0, 16: 2.0}.get(n), True))
    rows.append((key, label, "script", "commits/s", "sqlite", {16: 2.0}.get(n), True))
for target in ("new", "existing"):
    label = "%s, %s file" % (big_bytes, target)
    rows.append(("big-" + target, label, "ktmfs", "seconds", "native", 1.3, False))
    rows.append(("big-" + target, label + ", no tx", "mount", "seconds", "native", None, False))
    rows.append(("big-" + target, label + ", no tx, served", "served", "seconds", "native", None,
                 False))
    rows.append(("big-" + target, label + ", tx/served", "ktmfs", "seconds", "served", 1.1,
                 False))

print()
print("%-34s %-9s %-24s %-7s %-24s %-22s %-9s %s" % (
    "row", "unit", "ktmfs", "vs", "baseline", "ktmfs/baseline", "target", "met"))
for key, label, system, unit, base, target, higher in rows:
    k, b = runs.get((key, system), []), runs.get((key, base), [])
    fmt = "%.1f" if higher else "%.3f"
    r, rtext = ratio(k, b)
    ttext = "-" if target is None else ("%s %.2fx" % (">=" if higher else "<=", target))
    met = "-" if target is None or r is None else (
        "yes" if (r >= target if higher else r <= target) else "no")
    print("%-34s %-9s %-24s %-7s %-24s %-22s %-9s %s" % (
        label, unit, cell(k, fmt), base, cell(b, fmt), rtext, ttext, met))
print()
for label, key in (("reader of an unrelated file", "reader"),
                   ("the same, inside a transaction", "reader-inside"),
                   ("reader of the file written", "reader-same"),
                   ("the same, inside a transaction", "reader-same-inside")):
    busy, idle = runs.get((key + "-commit", "ktmfs"), []), runs.get((key + "-idle", "ktmfs"), [])
    xs = numbers(busy)
    met = "-" if not xs else ("yes" if statistics.median(xs) <= 20 else "no")
    print("%-34s %-9s %-24s %-7s %-24s %-22s %-9s %s" % (
        label, "ms worst", cell(busy, "%.2f"), "idle", cell(idle, "%.2f"), "-", "<= 20 ms", met))
print()
print("values: median (min..max) over %d repetition(s), a small row's value in a repetition being"
      " the mean of its slices; ratios per repetition, then the same." % repeat)
print("commits/s: higher is better; seconds: lower is better (ratio = ktmfs time / native time).")
print("no tx: the same write and fsync through the mount outside a transaction (no target); served: through a mount with -o nopassthrough, every write served by the daemon.")
print("reader: its worst round (stat, open, read 4 KiB, close) during a %s commit, and over 3 s"
      " with none (idle); inside a transaction, the commit leaves the file's first 4 KiB, so"
      " apply writes it in place; the reader of the file written reads the file that commit"
      " writes in place (idle: the unrelated file)." % big_bytes)
if reason:
    print("ktmfs rows not run: " + reason)
PY
exit $failed
