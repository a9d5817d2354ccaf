#!/usr/bin/env python3
"""Where a process's CPU time goes, by thread group (pipeline benchmark).

  cpu.py snapshot PID > before.json      the CPU time so far of PID's threads
                                          and of its child processes
  cpu.py report before.json after.json N  the CPU time between the two
                                          snapshots, per group, per document

Groups: the parse workers (child processes, live or already reaped), the
search index (tantivy's threads), SQLite (sqlx's connection threads) and the
services (Tokio's threads: HTTP, handlers, the worker, everything else).
A thread that ended between the snapshots is gone from /proc/PID/task, but
its time is still in the process's total: that rest is counted with the
index, because tantivy starts a new indexing thread for every segment, so
one per commit (`perf record -C 0` during a run shows them; Tokio's and
sqlx's threads live on under load).
Standard library only; reads /proc.
"""
import json
import os
import sys

TICKS = os.sysconf("SC_CLK_TCK")
GROUPS = (
    ("parse workers", lambda name: name == "<children>"),
    ("search index (tantivy)", lambda name: name.startswith(
        ("thrd-tantivy", "merge_thread", "segment_updater", "docstore", "<ended"))),
    ("SQLite", lambda name: name.startswith("sqlx-sqlite")),
    ("services (Tokio: HTTP, handlers)", lambda name: True),
)


def stat(path):
    """(comm, fields after the comm) of a /proc stat file."""
    with open(path) as f:
        text = f.read()
    return text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()


def seconds(fields, first):
    # After the comm: fields[0] is the state (field 3), so utime (field 14)
    # is fields[11], stime fields[12], cutime fields[13], cstime fields[14].
    return (int(fields[first]) + int(fields[first + 1])) / TICKS


def snapshot(pid):
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name, fields = stat(f"/proc/{pid}/task/{tid}/stat")
        except (FileNotFoundError, ProcessLookupError):
            continue
        threads[name] = threads.get(name, 0.0) + seconds(fields, 11)
    _, fields = stat(f"/proc/{pid}/stat")
    threads["<ended threads>"] = seconds(fields, 11) - sum(threads.values())
    children = seconds(fields, 13)  # reaped children
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            _, fields = stat(f"/proc/{entry}/stat")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[1] == str(pid):
            children += seconds(fields, 11)
    threads["<children>"] = children
    return threads


def report(before, after, documents):
    spent = {}
    for name, total in after.items():
        for group, matches in GROUPS:
            if matches(name):
                spent[group] = spent.get(group, 0.0) + total - before.get(name, 0.0)
                break
    total = sum(spent.values())
    print(f"CPU time: {total:.2f} s for {documents} documents, "
          f"{total / documents * 1e3:.2f} ms per document")
    for group, _ in GROUPS:
        value = spent.get(group, 0.0)
        print(f"  {group:34} {value / documents * 1e3:6.2f} ms/document  "
              f"{value / total * 100 if total else 0:5.1f} %")


if __name__ == "__main__":
    if sys.argv[1] == "snapshot":
        json.dump(snapshot(int(sys.argv[2])), sys.stdout)
    elif sys.argv[1] == "report":
        with open(sys.argv[2]) as b, open(sys.argv[3]) as a:
            report(json.load(b), json.load(a), int(sys.argv[4]))
    else:
        sys.exit(__doc__)
