#!/usr/bin/env python3
"""Counts GoogleTest cases from meson test logs, so the summary counts every test that ran.

usage: count-tests.py BUILD_DIR -> prints "passed failed skipped"

A meson test whose binary died before writing its report (a sanitizer abort, a timeout) has no
test cases in the JUnit file; it counts as one failure so that a crash can never look like a pass.
"""
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

logs = Path(sys.argv[1]) / "meson-logs"
passed = failed = skipped = 0
failures_by_test = {}  # meson test name -> failed cases seen in the JUnit file

junit = logs / "testlog.junit.xml"
if junit.exists():
    for suite in ET.parse(junit).getroot().iter("testsuite"):
        # Suite names are "<project>.<meson test>.<gtest suite>"
        parts = suite.get("name", "").split(".")
        test_name = parts[1] if len(parts) > 1 else suite.get("name", "")
        for case in suite.iter("testcase"):
            failures_by_test.setdefault(test_name, 0)
            if case.find("failure") is not None or case.find("error") is not None:
                failed += 1
                failures_by_test[test_name] += 1
            elif case.find("skipped") is not None or case.get("status") == "notrun":
                skipped += 1
            else:
                passed += 1

for line in (logs / "testlog.json").read_text().splitlines():
    entry = json.loads(line)
    if entry["name"] in failures_by_test:
        if entry["result"] not in ("OK", "SKIP", "EXPECTEDFAIL") and failures_by_test[entry["name"]] == 0:
            failed += 1  # every case passed but the binary still failed (e.g. a leak at exit)
        continue
    if entry["result"] in ("OK", "EXPECTEDFAIL"):
        passed += 1
    elif entry["result"] == "SKIP":
        skipped += 1
    else:
        failed += 1

print(passed, failed, skipped)
