#!/usr/bin/env bash
# Passthrough benchmark: the same workloads on a native directory and through ktmfs mounts of
# a directory on the same disk, side by side in one run, reported as ratios to native.
#   tests/bench/passthrough.sh [BUILD_DIR]      (default: build; run as root)
# Workloads: sequential write and read of a 512 MiB file in 1 MiB blocks (reads after dropping
# caches), 4 KiB random reads of a cached 256 MiB file, 4 KiB random writes, and a metadata
# load (create, stat, unlink of small files). Environment: SECONDS_PER_JOB (default 8),
# META_FILES (default 4000), BENCH_DIR (default a new directory under /tmp).
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
mnt=$work/mnt

cleanup() {
  if grep -q " $mnt fuse" /proc/mounts; then fusermount3 -u "$mnt" || umount -l "$mnt"; fi
  rm -rf "$work"
}
trap cleanup EXIT

c++ -O2 -std=c++20 -o "$work/meta" tests/bench/passthrough_meta.cc

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# fio_bw DIR NAME ARGS... -> prints "MiB/s" (write or read, whichever the job did)
fio_bw() {
  local dir=$1 name=$2; shift 2
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
  # Cached random reads: lay the file out and read it once so every page is in memory.
  fio --directory="$dir" --name=rnd --rw=write --bs=1M --size=256M --ioengine=psync \
    --output-format=terse >/dev/null
  cat "$dir"/rnd.* >/dev/null
  fio_bw "$dir" rnd --rw=randread --bs=4k --size=256M --ioengine=psync --time_based \
    --runtime="$runtime" >"$work/v"
  echo "$label rand_read_4k $(cat "$work/v")" >>"$work/results"
  fio_bw "$dir" rnd --rw=randwrite --bs=4k --size=256M --ioengine=psync --time_based \
    --runtime="$runtime" >"$work/v"
  echo "$label rand_write_4k $(cat "$work/v")" >>"$work/results"
  rm -f "$dir"/rnd.*
  mkdir "$dir/meta"
  read -r c s u < <("$work/meta" "$dir/meta" "$meta_files")
  rmdir "$dir/meta"
  python3 -c "n=$meta_files; print('$label create %.0f\n$label stat %.0f\n$label unlink %.0f' % (n/$c, n/$s, n/$u))" >>"$work/results"
}

: >"$work/results"
mkdir -p "$work/native" "$work/backing" "$mnt"
echo "native directory: $work/native"
measure native "$work/native"
for variant in default writeback; do
  opts=()
  [ "$variant" = writeback ] && opts=(-o writeback)
  "$ktmfs" "${opts[@]}" "$work/backing" "$mnt"
  echo "ktmfs ($variant): $work/backing on $mnt"
  measure "ktmfs-$variant" "$mnt"
  fusermount3 -u "$mnt"
done

python3 - "$work/results" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    label, key, value = line.split()
    rows.setdefault(key, {})[label] = float(value)
units = {"seq_write": "MiB/s", "seq_read": "MiB/s", "rand_read_4k": "MiB/s",
         "rand_write_4k": "MiB/s", "create": "files/s", "stat": "files/s", "unlink": "files/s"}
# libfuse 3.14's passthrough_hp, as ratios to native (the target to meet or beat).
target = {"seq_write": 0.85, "seq_read": 0.5, "rand_read_4k": 0.85, "rand_write_4k": 0.25,
          "create": 0.5, "stat": 0.5, "unlink": 0.5}
print()
print("%-14s %12s %12s %7s %12s %7s %8s" % ("workload", "native", "ktmfs", "ratio",
                                            "ktmfs+wb", "ratio", "target"))
for key in units:
    r = rows[key]
    n, d, w = r["native"], r["ktmfs-default"], r["ktmfs-writeback"]
    print("%-14s %12.1f %12.1f %6.2fx %12.1f %6.2fx %7.2fx   (%s)" % (
        key, n, d, d / n, w, w / n, target[key], units[key]))
PY
