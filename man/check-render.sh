#!/bin/sh
# Renders each man page given with groff in warning mode; any diagnostic fails the test, and so
# does a merge's conflict marker left in the text (scdoc passes it through as prose).
status=0
for page in "$@"; do
  if grep -nE '^(<<<<<<<|>>>>>>>) ' "$page"; then
    echo "$page: holds merge conflict markers"
    status=1
    continue
  fi
  out=$(LC_ALL=C groff -ww -z -man -Tutf8 "$page" 2>&1)
  if [ -n "$out" ]; then
    echo "$page:"
    echo "$out"
    status=1
  else
    echo "$page: renders without warnings"
  fi
done
exit $status
