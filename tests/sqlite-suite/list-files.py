#!/usr/bin/env python3
"""list-files.py TESTDIR — the test files tests/sqlite-suite/run runs by default.

SQLite's "veryquick" set, read from TESTDIR/permutations.test (its exclusion
lists are parsed, not copied), plus the files the TDE most affects: crash,
journal, WAL, vacuum, backup, multiplex and recover tests, several of which
veryquick leaves out. One path per line, relative to TESTDIR where possible.
"""
import fnmatch
import glob
import os
import re
import sys

testdir = sys.argv[1]
text = open(os.path.join(testdir, "permutations.test")).read()


def tcl_list_after(marker):
    """The words of the first {...} block after `marker`."""
    start = text.index("{", text.index(marker))
    depth, i = 0, start
    while True:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            break
        i += 1
    return text[start + 1:i].split()


names = [os.path.basename(p) for p in glob.glob(os.path.join(testdir, "*.test"))]
ext = []
for sub in ("rtree", "fts5/test", "expert", "lsm1/test", "recover", "session"):
    ext += glob.glob(os.path.join(testdir, "..", "ext", sub, "*.test"))
everything = names + [os.path.normpath(p) for p in ext]


def drop(files, patterns):
    return [f for f in files if not any(fnmatch.fnmatch(os.path.basename(f), p) for p in patterns)]


alltests = drop(everything, tcl_list_after("set alltests [test_set $alltests -exclude"))
quick = drop(alltests, tcl_list_after("set allquicktests [test_set $alltests -exclude"))
block = text[text.index('test_suite "veryquick"'):]
excl = re.search(r"-exclude (.*?)\n\s*\]", block, re.S).group(1).replace("\\", " ").split()
veryquick = drop(quick, excl)

extra = []
for pattern in ("crash*.test", "journal*.test", "wal*.test", "vacuum*.test", "backup*.test", "multiplex*.test",
                "recover*.test"):
    extra += [os.path.basename(p) for p in glob.glob(os.path.join(testdir, pattern))]
extra += [os.path.normpath(p) for p in glob.glob(os.path.join(testdir, "..", "ext", "recover", "*.test"))]
extra = [f for f in extra if not fnmatch.fnmatch(os.path.basename(f), "*slow*")]

seen = set()
for f in sorted(veryquick) + sorted(extra):
    key = os.path.basename(f)
    if key not in seen:
        seen.add(key)
        print(f if os.path.isabs(f) else f)
