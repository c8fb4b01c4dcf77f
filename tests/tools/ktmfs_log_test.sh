#!/bin/bash
# ktmfs-log on a real log: stat, dump, verify and check (and their --json) of a sound log, where
# check finds the protocol violation make_log writes; verify, check and dump of a damaged one
# name the stream and the LSN and exit 1; usage errors exit 2; a directory without a log exits
# 3; and no command changes a byte of the log.
# usage: ktmfs_log_test.sh KTMFS_LOG MAKE_LOG
set -u
tool=$1 make=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fails=0
check() {  # check NAME EXPECTED_RC PATTERN -- command...
  local name=$1 want=$2 pattern=$3
  shift 4
  local out rc
  out=$("$@" 2>&1)
  rc=$?
  if [ "$rc" -ne "$want" ] || ! grep -qE -- "$pattern" <<<"$out"; then
    echo "FAIL $name: exit $rc (wanted $want), output:"
    echo "$out" | sed 's/^/    /'
    fails=$((fails + 1))
  else
    echo "ok   $name"
  fi
}

mkdir "$dir/state" "$dir/state/log"
"$make" "$dir/state/log" >/dev/null || { echo "make_log failed"; exit 1; }
sum() { cat "$1"/* | md5sum; }
before=$(sum "$dir/state/log")

check "stat shows streams and geometry" 0 'tm .* 4 ' -- "$tool" stat "$dir/state"
check "stat shows block size" 0 '^block size +4096' -- "$tool" stat "$dir/state/log"
check "dump decodes the commit decision" 0 \
  'commit decision tx 0a1b2c3d-0000-4000-8000-000000000001 rms data' -- "$tool" dump "$dir/state"
check "dump decodes the enlistment" 0 'enlist tx .* rm data owner 1000 "sample"' -- \
  "$tool" dump "$dir/state"
check "dump decodes a filesystem RM's operation" 0 \
  'data .* rename tx 0a1b2c3d-0000-4000-8000-000000000001 releases/next -> current' -- \
  "$tool" dump "$dir/state"
check "dump of one stream" 0 '^0x[0-9a-f]+ +rm ' -- "$tool" dump -s rm "$dir/state"
check "dump -x shows payload bytes" 0 '5a 5a 5a' -- "$tool" dump -x -s rm "$dir/state"
check "verify a sound log" 0 '^verify: OK$' -- "$tool" verify "$dir/state"
# make_log writes a commit decision for a single RM, which only a two-phase commit logs.
check "check names a protocol violation" 1 \
  'VIOLATION: stream tm LSN 0x[0-9a-f]+ tx 0a1b2c3d-0000-4000-8000-000000000001: COMMIT of a single rm' \
  -- "$tool" check "$dir/state"
check "check lists streams it cannot check" 1 '^not checked: stream rm ' -- "$tool" check "$dir/state"
check "check --json" 1 '"result": "violations"' -- "$tool" check --json "$dir/state"
check "stat --json" 0 '"block_size": 4096' -- "$tool" stat --json "$dir/state"
check "dump --json" 0 '"kind":"commit"' -- "$tool" dump -j "$dir/state"
[ "$(sum "$dir/state/log")" = "$before" ] && echo "ok   the log is unchanged" ||
  { echo "FAIL ktmfs-log changed the log"; fails=$((fails + 1)); }

mkdir "$dir/bad"
first=$("$make" "$dir/bad" damage | sed -n 's/^first rm record at //p')
check "verify names stream and LSN of damage" 1 "DAMAGE: .*'rm'.*LSN $first" -- \
  "$tool" verify "$dir/bad"
check "verify says DAMAGED" 1 '^verify: DAMAGED$' -- "$tool" verify "$dir/bad"
check "check says DAMAGED" 1 '^check: DAMAGED ' -- "$tool" check "$dir/bad"
check "dump of a damaged log still shows the rest" 1 'commit decision' -- \
  "$tool" dump "$dir/bad"

check "no log here" 3 'no ktmfs log here' -- "$tool" stat "$dir"
check "unknown command" 2 "unknown command 'frob'" -- "$tool" frob "$dir/state"
check "missing directory" 2 'expected a command and a directory' -- "$tool" stat
check "--help" 0 '^Usage: ktmfs-log' -- "$tool" --help
check "--version" 0 '^ktmfs-log \(ktmfs\) ' -- "$tool" --version

[ "$fails" -eq 0 ]
