#!/bin/sh
# Renders each man page given with groff in warning mode; any diagnostic fails the test.
status=0
for page in "$@"; do
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
