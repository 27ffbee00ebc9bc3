#!/usr/bin/env python3
"""What replacing a file costs on one file system, system call by system call (a program that
prints figures; it asserts nothing).

hands' `write` and `edit` replace a file the way CATALOGUE T23 asks: the new content goes to a
new temporary file in the same directory, which is renamed over the target, so a reader or a
crash sees the old file or the new one, never a truncated one. The SDK worker's tools write in
place (`Path.write_bytes`: open with O_TRUNC, write, close). This times both ways on the file
system holding DIR, 50 files of 8 KiB replaced in turn for --rounds rounds, and prints the
median and p90 of each step, the whole replacement, and whether the file system is an ext4
without a journal, on which creating a file gets dearer with every file deleted in the last
minute (the kernel's `recently_deleted` check in `find_inode_bit` runs only without a
journal), as the renames of a busy trace do. `--churn N` creates and deletes N files in DIR
just before timing, as the benchmark's earlier runs leave behind.

Usage: fs_costs.py DIR [--rounds N] [--churn N]   (pin it to one CPU with taskset for steadier
figures)
"""

import argparse
import os
import statistics
import time


def journal_state(path: str) -> str:
    """'ext4 with a journal', 'ext4 without a journal', or the file system's type."""
    dev = os.stat(path).st_dev
    best = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            fields = left.split()
            major, minor = (int(x) for x in fields[2].split(":"))
            if os.makedev(major, minor) == dev:
                fstype, source = right.split()[:2]
                best = (fstype, source)
    if best is None:
        return "unknown file system"
    fstype, source = best
    if fstype != "ext4":
        return fstype
    task = f"/sys/fs/ext4/{os.path.basename(source)}/journal_task"
    try:
        with open(task) as f:
            has_journal = f.read().strip() != "<none>"
    except OSError:
        return "ext4 (journal unknown)"
    return "ext4 with a journal" if has_journal else "ext4 without a journal"


def timed(samples: dict, key: str, f):
    start = time.perf_counter_ns()
    r = f()
    samples.setdefault(key, []).append((time.perf_counter_ns() - start) / 1000)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--churn", type=int, default=0)
    args = ap.parse_args()
    work = os.path.join(args.dir, f"hands-fs-costs-{os.getpid()}")
    os.mkdir(work)
    d = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
    data = os.urandom(4096).hex().encode()  # 8 KiB, like the trace's files
    names = [f"f{i}.txt" for i in range(50)]
    for n in names:
        fd = os.open(n, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=d)
        os.write(fd, data)
        os.close(fd)
    for i in range(args.churn):
        n = f".churn-{i}"
        os.close(os.open(n, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=d))
    for i in range(args.churn):
        os.unlink(f".churn-{i}", dir_fd=d)
    s: dict = {}
    try:
        for _ in range(args.rounds):
            for i, n in enumerate(names):
                tmp = f".hands-{i}.tmp"
                t0 = time.perf_counter_ns()
                fd = timed(s, "rename way: create the temporary file", lambda: os.open(
                    tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666, dir_fd=d))
                timed(s, "rename way: write", lambda: os.write(fd, data))
                timed(s, "rename way: close", lambda: os.close(fd))
                timed(s, "rename way: rename over the file", lambda: os.rename(
                    tmp, n, src_dir_fd=d, dst_dir_fd=d))
                s.setdefault("rename way: whole", []).append((time.perf_counter_ns() - t0) / 1000)
            time.sleep(0.2)
            for n in names:
                t0 = time.perf_counter_ns()
                fd = timed(s, "in place: open with O_TRUNC", lambda: os.open(
                    n, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC, dir_fd=d))
                timed(s, "in place: write", lambda: os.write(fd, data))
                timed(s, "in place: close", lambda: os.close(fd))
                s.setdefault("in place: whole", []).append((time.perf_counter_ns() - t0) / 1000)
            time.sleep(0.2)
    finally:
        for n in os.listdir(d):
            os.unlink(n, dir_fd=d)
        os.close(d)
        os.rmdir(work)
    print(f"{args.dir}: {journal_state(args.dir)}; {args.churn} files created and deleted first, "
          f"then {args.rounds} rounds of 50 replacements of 8 KiB")
    print("| step | p50 | p90 |")
    print("|---|---:|---:|")
    for key, v in s.items():
        v.sort()
        print(f"| {key} | {statistics.median(v):.1f} µs | {v[len(v) * 9 // 10]:.1f} µs |")


if __name__ == "__main__":
    main()
