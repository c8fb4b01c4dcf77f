#!/usr/bin/env bash
# Builds libfuse's own high-performance passthrough example (example/passthrough_hp.cc) against
# the installed libfuse3-dev, as the baseline of passthrough.sh. Its source is fetched here, at
# bench time, and never kept in this repository.
#   tests/bench/build_passthrough_hp.sh OUTDIR
# Prints the path of passthrough_hp (passthrough_hp_xattr is built next to it, see below). On
# failure prints one line saying why on stderr and exits 1.
# The source comes from PASSTHROUGH_HP_SRC (an unpacked libfuse source tree) when set, else from
# the Debian source package of the installed libfuse3-dev version, fetched with apt-get through
# a private list directory (deb-src lines made from this machine's own apt sources), so the
# system's apt state is left as it was.
set -euo pipefail
out=${1:?usage: build_passthrough_hp.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)

fail() { echo "$*" >&2; exit 1; }

version=$(dpkg-query -W -f='${Version}' libfuse3-dev 2>/dev/null) ||
  fail "libfuse3-dev is not installed"

if [ -n "${PASSTHROUGH_HP_SRC:-}" ]; then
  src=$PASSTHROUGH_HP_SRC
else
  apt=$out/apt
  mkdir -p "$apt/sources" "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/dl"
  # deb-src twins of the configured sources (deb822 and one-line formats).
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && sed 's/^Types:.*/Types: deb-src/' "$f" >"$apt/sources/$(basename "$f")"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && sed -n 's/^deb[[:space:]]/deb-src /p' "$f" >"$apt/sources/$(basename "$f").list"
  done
  aptopts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt/sources"
           -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -qq)
  apt-get "${aptopts[@]}" update >"$apt/log" 2>&1 ||
    fail "apt-get update of the source lists failed: $(tail -1 "$apt/log")"
  (cd "$apt/dl" && apt-get "${aptopts[@]}" source --download-only "fuse3=$version") \
    >>"$apt/log" 2>&1 || fail "apt-get source fuse3=$version failed: $(tail -1 "$apt/log")"
  tarball=$(ls "$apt"/dl/fuse3_*.orig.tar.* 2>/dev/null | head -1)
  [ -n "$tarball" ] || fail "apt-get source fuse3=$version gave no upstream tarball"
  tar -xf "$tarball" -C "$apt/dl" --wildcards '*/example/passthrough_hp.cc' '*/example/cxxopts.hpp' ||
    fail "$tarball has no example/passthrough_hp.cc"
  src=$(ls -d "$apt"/dl/fuse-*/ | head -1)
fi
[ -f "$src/example/passthrough_hp.cc" ] || fail "no example/passthrough_hp.cc in $src"

# The flags libfuse's meson build gives C++ files. Its private config (HAVE_SETXATTR,
# HAVE_POSIX_FALLOCATE) reaches only C files, so the example is built without xattr and
# fallocate operations there too, and so here: passthrough_hp. passthrough_hp_xattr has them,
# as a filesystem that serves xattrs must (the kernel then asks for security.capability
# before every write).
for variant in passthrough_hp passthrough_hp_xattr; do
  defs=()
  [ "$variant" = passthrough_hp_xattr ] && defs=(-DHAVE_SETXATTR -DHAVE_POSIX_FALLOCATE)
  c++ -std=c++17 -O2 -D_REENTRANT -DHAVE_CONFIG_H -D_GNU_SOURCE "${defs[@]}" -w \
    -o "$out/$variant" "$src/example/passthrough_hp.cc" \
    $(pkg-config --cflags --libs fuse3) -lpthread >"$out/cc.log" 2>&1 ||
    fail "compiling passthrough_hp.cc failed: $(head -1 "$out/cc.log")"
done
echo "$out/passthrough_hp"
