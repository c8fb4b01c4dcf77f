#!/usr/bin/env bash
# Passthrough benchmark: the same workloads on a native directory, through libfuse's own
# high-performance passthrough example (passthrough_hp, the baseline to meet) and through ktmfs
# (default options, -o writeback, and -o writeback with names cached as long as passthrough_hp
# caches them), each over a directory on the same disk, side by side in one run; reported as
# ratios to native and ktmfs's ratios to passthrough_hp.
#   tests/bench/passthrough.sh [BUILD_DIR]      (default: build; run as root)
# Workloads: sequential write and read of a 512 MiB file in 1 MiB blocks (reads after dropping
# caches), 4 KiB random reads of a cached 256 MiB file, 4 KiB random writes, and a metadata
# load (create, stat, unlink of small files; meta_total is one file's create+stat+unlink).
# passthrough_hp is fetched and built at bench time by build_passthrough_hp.sh; when that fails
# its column says "not run" and why. Environment: SECONDS_PER_JOB (default 8), META_FILES
# (default 4000), BENCH_DIR (default a new directory under /tmp), PASSTHROUGH_HP_SRC (an
# unpacked libfuse source tree to build the example from, instead of fetching it).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
ktmfs=$(pwd)/$build/fs/ktmfs
[ -x "$ktmfs" ] || { echo "passthrough.sh: $ktmfs not built" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "passthrough.sh: run as root (drops caches, mounts)" >&2; exit 2; }
command -v fio >/dev/null || { echo "passthrough.sh: fio is missing (scripts/install-deps)" >&2; exit 2; }
runtime=${SECONDS_PER_JOB:-8}
meta_files=${META_FILES:-4000}
work=${BENCH_DIR:-$(mktemp -d /tmp/ktmfs-bench-XXXXXX)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
mnt=$work/mnt
hp_pid=

cleanup() {
  if grep -q " $mnt fuse" /proc/mounts; then fusermount3 -u "$mnt" || umount -l "$mnt"; fi
  if [ -n "$hp_pid" ] && kill -0 "$hp_pid" 2>/dev/null; then kill "$hp_pid"; wait "$hp_pid" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

c++ -O2 -std=c++20 -o "$work/meta" tests/bench/passthrough_meta.cc

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

# measure LABEL DIR: runs every workload in DIR, appends "LABEL key value" lines to results
measure() {
  local label=$1 dir=$2
  fio_bw "$dir" seq --rw=write --bs=1M --size=512M --ioengine=psync --end_fsync=1 >"$work/v"
  echo "$label seq_write $(cat "$work/v")" >>"$work/results"
  drop_caches
  fio_bw "$dir" seq --rw=read --bs=1M --size=512M --ioengine=psync >"$work/v"
  echo "$label seq_read $(cat "$work/v")" >>"$work/results"
  rm -f "$dir"/seq.*
  # Cached random reads: lay the file out and read it once so every page is in memory (and tell
  # fio not to drop it: its default invalidates the file's cache before a job).
  fio --directory="$dir" --name=rnd --rw=write --bs=1M --size=256M --ioengine=psync \
    --output-format=terse >/dev/null
  cat "$dir"/rnd.* >/dev/null
  fio_bw "$dir" rnd --rw=randread --bs=4k --size=256M --ioengine=psync --invalidate=0 --time_based \
    --runtime="$runtime" >"$work/v"
  echo "$label rand_read_4k $(cat "$work/v")" >>"$work/results"
  fio_bw "$dir" rnd --rw=randwrite --bs=4k --size=256M --ioengine=psync --time_based \
    --runtime="$runtime" >"$work/v"
  echo "$label rand_write_4k $(cat "$work/v")" >>"$work/results"
  rm -f "$dir"/rnd.*
  mkdir "$dir/meta"
  sync
  read -r c s u < <("$work/meta" "$dir/meta" "$meta_files")
  rmdir "$dir/meta"
  python3 -c "n=$meta_files; print('$label create %.0f\n$label stat %.0f\n$label unlink %.0f\n$label meta_total %.0f' % (n/$c, n/$s, n/$u, n/($c+$s+$u)))" >>"$work/results"
}

# Waits (bounded) until $mnt is a FUSE mount: passthrough_hp mounts only after it started.
wait_mounted() {
  for _ in $(seq 100); do
    grep -q " $mnt fuse" /proc/mounts && return 0
    kill -0 "$hp_pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

: >"$work/results"
mkdir -p "$work/native" "$work/backing" "$mnt"
echo "native directory: $work/native"
measure native "$work/native"

# run_hp LABEL BINARY: mounts a passthrough_hp build with its default options and measures it.
run_hp() {
  local label=$1 bin=$2
  rm -rf "$work/hp-backing" && mkdir "$work/hp-backing"
  "$bin" --foreground "$work/hp-backing" "$mnt" >"$work/hp.log" 2>&1 &
  hp_pid=$!
  if wait_mounted; then
    echo "$label: $bin on $mnt"
    measure "$label" "$mnt"
    fusermount3 -u "$mnt"
    wait "$hp_pid" || true
  else
    hp_reason="$label did not mount: $(tail -1 "$work/hp.log")"
  fi
  hp_pid=
}

if [ -z "$hp_reason" ]; then
  echo "passthrough_hp runs with its default options: writeback cache, entry and attribute" \
    "timeouts of 86400 s, keep_cache, splice, default_permissions; built as libfuse's meson" \
    "builds it, so without xattr operations (passthrough_hp_xattr: with them)"
  run_hp passthrough_hp "$hp"
  [ -z "$hp_reason" ] && run_hp passthrough_hp_xattr "${hp}_xattr"
fi
[ -n "$hp_reason" ] && echo "passthrough_hp: not run: $hp_reason"

# cached: the options that make ktmfs cache what passthrough_hp caches (names and their absence
# for as long; see ktmfs(8) for what a positive entry_timeout costs).
for variant in default writeback cached; do
  case $variant in
    default) opts=() ;;
    writeback) opts=(-o writeback) ;;
    cached) opts=(-o writeback,entry_timeout=86400,negative_timeout=86400) ;;
  esac
  "$ktmfs" "${opts[@]}" "$work/backing" "$mnt"
  echo "ktmfs ($variant${opts[*]:+: ${opts[*]}}): $work/backing on $mnt"
  measure "ktmfs-$variant" "$mnt"
  fusermount3 -u "$mnt"
done

python3 - "$work/results" "$hp_reason" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    label, key, value = line.split()
    rows.setdefault(key, {})[label] = float(value)
hp_reason = sys.argv[2]
units = {"seq_write": "MiB/s", "seq_read": "MiB/s", "rand_read_4k": "MiB/s",
         "rand_write_4k": "MiB/s", "create": "files/s", "stat": "files/s", "unlink": "files/s",
         "meta_total": "files/s"}
print()
print("values in the unit shown; (x) = ratio to native; /hp = ratio to passthrough_hp")
print("%-13s %9s | %9s %6s | %9s %6s | %9s %6s %6s | %9s %6s %6s | %9s %6s %6s" % (
    "workload", "native", "pthru_hp", "(x)", "hp+xattr", "(x)", "ktmfs", "(x)", "/hp",
    "ktmfs+wb", "(x)", "/hp", "cached", "(x)", "/hp"))
for key, unit in units.items():
    r = rows[key]
    n = r["native"]
    def cells(label, hp=None):
        if label not in r:
            return "%9s %6s" % ("not run", "") + ("" if hp is None else " %6s" % "")
        v = r[label]
        s = "%9.1f %5.2fx" % (v, v / n)
        if hp is not None:
            s += " %5.2fx" % (v / hp) if hp > 0 else " %6s" % "-"
        return s
    hp = r.get("passthrough_hp", 0)
    print("%-13s %9.1f | %s | %s | %s | %s | %s   %s" % (
        key, n, cells("passthrough_hp"), cells("passthrough_hp_xattr"), cells("ktmfs-default", hp),
        cells("ktmfs-writeback", hp), cells("ktmfs-cached", hp), unit))
if hp_reason:
    print("passthrough_hp not run: " + hp_reason)
PY
