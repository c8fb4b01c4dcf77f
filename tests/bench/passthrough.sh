#!/usr/bin/env bash
# Passthrough benchmark: the same workloads on a native directory, through libfuse's own
# high-performance passthrough example (passthrough_hp, the baseline to meet; and the same
# example with its xattr operations compiled in) and through ktmfs (default options,
# -o nopassthrough, -o nokillpriv_v2, -o nouring, -o writeback, and -o writeback with names
# cached as long as passthrough_hp caches them), each
# over its own directory on the same disk, all mounted for the whole run and measured in turns;
# reported as medians over the repetitions, ratios to native and ktmfs's ratios to
# passthrough_hp.
#   tests/bench/passthrough.sh [BUILD_DIR]      (default: build; run as root)
# Workloads: sequential write and read of a 512 MiB file in 1 MiB blocks (reads after dropping
# caches), 4 KiB random reads of a cached 256 MiB file, 4 KiB random writes, and a metadata
# load (create, stat, unlink of small files; meta_total is one file's create+stat+unlink), and
# stats from 16 threads at once (stat_x16). FUSE over io_uring is switched on for the run where
# the kernel has it (/sys/module/fuse/parameters/enable_uring, put back at the end).
# passthrough_hp is fetched and built at bench time by build_passthrough_hp.sh; when that fails
# its columns say "not run" and why. Environment: SECONDS_PER_JOB (default 8), META_FILES
# (default 4000), REPEAT (default 3), BENCH_DIR (default a new directory under /tmp),
# PASSTHROUGH_HP_SRC (an unpacked libfuse source tree to build the example from).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
ktmfs=$(pwd)/$build/fs/ktmfs
[ -x "$ktmfs" ] || { echo "passthrough.sh: $ktmfs not built" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "passthrough.sh: run as root (drops caches, mounts)" >&2; exit 2; }
command -v fio >/dev/null || { echo "passthrough.sh: fio is missing (scripts/install-deps)" >&2; exit 2; }
runtime=${SECONDS_PER_JOB:-8}
meta_files=${META_FILES:-4000}
repeat=${REPEAT:-3}
work=${BENCH_DIR:-$(mktemp -d /tmp/ktmfs-bench-XXXXXX)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
hp_pids=()
mounts=()

uring_param=/sys/module/fuse/parameters/enable_uring
uring_saved=
cleanup() {
  [ -n "$uring_saved" ] && echo "$uring_saved" >"$uring_param"
  for m in "${mounts[@]}"; do
    if grep -q " $m fuse" /proc/mounts; then fusermount3 -u "$m" || umount -l "$m"; fi
  done
  for p in "${hp_pids[@]}"; do
    if kill -0 "$p" 2>/dev/null; then kill "$p"; fi
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

c++ -O2 -std=c++20 -o "$work/meta" tests/bench/passthrough_meta.cc
c++ -O2 -std=c++20 -pthread -o "$work/pstat" tests/bench/parallel_stat.cc
if [ -w "$uring_param" ]; then
  uring_saved=$(cat "$uring_param")
  echo Y >"$uring_param"
  echo "FUSE over io_uring: enabled for this run ($uring_param was $uring_saved)"
else
  echo "FUSE over io_uring: not on this kernel ($uring_param is missing); no-ring = ktmfs"
fi

if hp=$(tests/bench/build_passthrough_hp.sh "$work/hp-build" 2>"$work/hp-reason"); then
  hp_reason=
else
  hp_reason=$(tail -1 "$work/hp-reason")
fi

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# fio_bw DIR NAME ARGS... -> prints "MiB/s" (write or read, whichever the job did)
fio_bw() {
  local dir=$1 name=$2; shift 2
  sync  # start every job without the previous one's dirty pages being written back
  fio --directory="$dir" --name="$name" --output-format=json "$@" |
    python3 -c 'import json,sys
j=json.load(sys.stdin)["jobs"][0]
bw=max(j["read"]["bw_bytes"], j["write"]["bw_bytes"])
print("%.1f" % (bw/1048576))'
}

# measure LABEL DIR REP: runs every workload in DIR, appends "LABEL REP key value" lines
measure() {
  local label=$1 dir=$2 rep=$3 out="$work/results"
  fio_bw "$dir" seq --rw=write --bs=1M --size=512M --ioengine=psync --end_fsync=1 >"$work/v"
  echo "$label $rep seq_write $(cat "$work/v")" >>"$out"
  drop_caches
  fio_bw "$dir" seq --rw=read --bs=1M --size=512M --ioengine=psync >"$work/v"
  echo "$label $rep seq_read $(cat "$work/v")" >>"$out"
  rm -f "$dir"/seq.*
  # Cached random reads: lay the file out and read it once so every page is in memory (and tell
  # fio not to drop it: its default invalidates the file's cache before a job).
  fio --directory="$dir" --name=rnd --rw=write --bs=1M --size=256M --ioengine=psync \
    --output-format=terse >/dev/null
  cat "$dir"/rnd.* >/dev/null
  fio_bw "$dir" rnd --rw=randread --bs=4k --size=256M --ioengine=psync --invalidate=0 --time_based \
    --runtime="$runtime" >"$work/v"
  echo "$label $rep rand_read_4k $(cat "$work/v")" >>"$out"
  fio_bw "$dir" rnd --rw=randwrite --bs=4k --size=256M --ioengine=psync --time_based \
    --runtime="$runtime" >"$work/v"
  echo "$label $rep rand_write_4k $(cat "$work/v")" >>"$out"
  rm -f "$dir"/rnd.*
  mkdir "$dir/meta"
  sync
  read -r c s u < <("$work/meta" "$dir/meta" "$meta_files")
  rmdir "$dir/meta"
  python3 -c "n=$meta_files; print('\n'.join('$label $rep %s %.0f' % kv for kv in (('create', n/$c), ('stat', n/$s), ('unlink', n/$u), ('meta_total', n/($c+$s+$u)))))" >>"$out"
  mkdir "$dir/pstat"
  echo "$label $rep stat_x16 $("$work/pstat" "$dir/pstat" 16 "$runtime")" >>"$out"
  rmdir "$dir/pstat"
}

# Waits (bounded) until $1 is a FUSE mount served by process $2.
wait_mounted() {
  local m=$1 pid=$2
  for _ in $(seq 100); do
    grep -q " $m fuse" /proc/mounts && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

: >"$work/results"
systems=(native)
mkdir -p "$work/native"
dirs=("$work/native")

if [ -z "$hp_reason" ]; then
  echo "passthrough_hp runs with its default options: writeback cache, entry and attribute" \
    "timeouts of 86400 s, keep_cache, splice, default_permissions; built as libfuse's meson" \
    "builds it, so without xattr operations (passthrough_hp_xattr: with them)"
  for label in passthrough_hp passthrough_hp_xattr; do
    bin=$hp; [ "$label" = passthrough_hp_xattr ] && bin=${hp}_xattr
    mkdir -p "$work/b-$label" "$work/m-$label"
    mounts+=("$work/m-$label")
    "$bin" --foreground "$work/b-$label" "$work/m-$label" >"$work/$label.log" 2>&1 &
    hp_pids+=($!)
    if ! wait_mounted "$work/m-$label" "$!"; then
      hp_reason="$label did not mount: $(tail -1 "$work/$label.log")"
      break
    fi
    echo "$label: $bin, $work/b-$label on $work/m-$label"
    systems+=("$label")
    dirs+=("$work/m-$label")
  done
fi
[ -n "$hp_reason" ] && echo "passthrough_hp: not run: $hp_reason"

# cached: the options that make ktmfs cache what passthrough_hp caches (names and their absence
# for as long; see ktmfs(8) for what a positive entry_timeout costs).
# nopt: kernel passthrough declined, so every read and write of a file open outside
# transactions is a request to the daemon (fs/ops/passthrough.h).
# nokp2: the kernel's HANDLE_KILLPRIV_V2 declined too, which brings back a GETXATTR of
# security.capability before every write (fs/fuse/kernel_channel.h).
# noring: FUSE over io_uring declined, so requests travel over /dev/fuse (fs/fuse/fuse_ring.h).
for variant in default nopt nokp2 noring writeback cached; do
  case $variant in
    default) opts=() ;;
    nopt) opts=(-o nopassthrough) ;;
    nokp2) opts=(-o nopassthrough,nokillpriv_v2) ;;
    noring) opts=(-o nouring) ;;
    writeback) opts=(-o writeback) ;;
    cached) opts=(-o writeback,entry_timeout=86400,negative_timeout=86400) ;;
  esac
  mkdir -p "$work/b-$variant" "$work/m-$variant"
  mounts+=("$work/m-$variant")
  if ! "$ktmfs" "${opts[@]}" "$work/b-$variant" "$work/m-$variant" 2>"$work/ktmfs.log"; then
    echo "passthrough.sh: ktmfs-$variant did not mount: $(tail -1 "$work/ktmfs.log")" >&2
    exit 1
  fi
  echo "ktmfs-$variant${opts[*]:+ (${opts[*]})}: $work/b-$variant on $work/m-$variant"
  systems+=("ktmfs-$variant")
  dirs+=("$work/m-$variant")
done

for rep in $(seq "$repeat"); do
  echo "repetition $rep of $repeat: load average $(cut -d' ' -f1-3 /proc/loadavg)"
  for i in "${!systems[@]}"; do
    measure "${systems[$i]}" "${dirs[$i]}" "$rep"
  done
done

python3 - "$work/results" "$hp_reason" <<'PY'
import statistics, sys
vals = {}  # (label, key) -> {rep: value}
for line in open(sys.argv[1]):
    label, rep, key, value = line.split()
    vals.setdefault((label, key), {})[rep] = float(value)
hp_reason = sys.argv[2]
units = {"seq_write": "MiB/s", "seq_read": "MiB/s", "rand_read_4k": "MiB/s",
         "rand_write_4k": "MiB/s", "create": "files/s", "stat": "files/s", "unlink": "files/s",
         "meta_total": "files/s", "stat_x16": "stats/s"}

def median_ratio(a, b, key):
    """The median over repetitions of a's value divided by b's, or None."""
    va, vb = vals.get((a, key)), vals.get((b, key))
    if not va or not vb:
        return None
    rs = [va[r] / vb[r] for r in va if r in vb and vb[r] > 0]
    return statistics.median(rs) if rs else None

print()
print("medians over the repetitions, in the unit shown; (x) = ratio to native;"
      " /hp = ratio to passthrough_hp (each ratio taken within a repetition)")
print("%-13s %9s | %9s %6s | %9s %6s | %9s %6s %6s | %9s %6s %6s | %9s %6s %6s | %9s %6s %6s"
      " | %9s %6s %6s | %9s %6s %6s" % (
    "workload", "native", "pthru_hp", "(x)", "hp+xattr", "(x)", "ktmfs", "(x)", "/hp",
    "no-pt", "(x)", "/hp", "no-kp2", "(x)", "/hp", "no-ring", "(x)", "/hp", "ktmfs+wb", "(x)",
    "/hp", "cached", "(x)", "/hp"))
for key, unit in units.items():
    def cells(label, vs_hp):
        v = vals.get((label, key))
        width = 16 + (7 if vs_hp else 0)
        if not v:
            return ("%9s" % "not run").ljust(width)
        s = "%9.1f %5.2fx" % (statistics.median(v.values()), median_ratio(label, "native", key))
        if vs_hp:
            r = median_ratio(label, "passthrough_hp", key)
            s += " %5.2fx" % r if r is not None else " %6s" % "-"
        return s
    n = statistics.median(vals[("native", key)].values())
    print("%-13s %9.1f | %s | %s | %s | %s | %s | %s | %s | %s   %s" % (
        key, n, cells("passthrough_hp", False), cells("passthrough_hp_xattr", False),
        cells("ktmfs-default", True), cells("ktmfs-nopt", True), cells("ktmfs-nokp2", True),
        cells("ktmfs-noring", True), cells("ktmfs-writeback", True), cells("ktmfs-cached", True),
        unit))
if hp_reason:
    print("passthrough_hp not run: " + hp_reason)
PY
