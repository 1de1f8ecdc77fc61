"""Housekeeper deletion throughput against ``find -delete``, and dry-run scan rate.

Builds two identical shallow trees (``--dirs`` directories of small files, half of them
30 days old), then, in the same run:

- a dry run of chronolog's cleanup over tree B (the scan rate: files examined per second);
- ``find A -type f -mtime +7 -delete`` over tree A;
- the real chronolog cleanup over tree B (``retention_days=7``).

Prints one JSON line per figure: ``{"bench", "value", "unit", ...}``. Targets: deletion
at least 0.6x find's rate, dry-run scan at least 100,000 files/s.

    python bench/bench_housekeeper.py --files 200000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from typing import Any

from chronolog.housekeeping import CleanupRules, run_cleanup

OLD_SECONDS = 30 * 86_400
PAYLOAD = b"x" * 64


def emit(bench: str, value: float, unit: str, **extra: Any) -> None:
    print(json.dumps({"bench": bench, "value": round(value, 3), "unit": unit, **extra}))
    sys.stdout.flush()


def build_tree(root: str, files: int, dirs: int, now: float) -> int:
    """Create the tree; returns how many files are old."""
    old = 0
    per_dir = -(-files // dirs)
    made = 0
    for d in range(dirs):
        sub = os.path.join(root, f"d{d:05d}")
        os.mkdir(sub)
        dir_fd = os.open(sub, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for i in range(min(per_dir, files - made)):
                name = f"f{i:06d}.dat"
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dir_fd)
                os.write(fd, PAYLOAD)
                if (made + i) % 2 == 0:
                    os.utime(fd, (now - OLD_SECONDS, now - OLD_SECONDS))
                    old += 1
                os.close(fd)
            made += min(per_dir, files - made)
        finally:
            os.close(dir_fd)
    return old


def count_files(root: str) -> int:
    return sum(len(names) for _, _, names in os.walk(root))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--dirs", type=int, default=200)
    parser.add_argument("--base", default="/var/tmp", help="where to build the trees")
    args = parser.parse_args()

    base = tempfile.mkdtemp(prefix="chronolog-bench-", dir=args.base)
    tree_find = os.path.join(base, "find")
    tree_chronolog = os.path.join(base, "chronolog")
    os.mkdir(tree_find)
    os.mkdir(tree_chronolog)
    try:
        if os.stat(tree_find).st_dev != os.stat(tree_chronolog).st_dev:
            raise SystemExit("both trees must be on one file system")
        now = time.time()
        t0 = time.perf_counter()
        old = build_tree(tree_find, args.files, args.dirs, now)
        build_tree(tree_chronolog, args.files, args.dirs, now)
        os.sync()  # so neither timed run pays for writing back the other's creation
        common = {
            "files": args.files,
            "dirs": args.dirs,
            "old_files": old,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
        }
        emit("housekeeper_build_trees", time.perf_counter() - t0, "s", **common)

        rules = CleanupRules(pattern="**", retention_days=7, recursive=True)
        when = datetime.fromtimestamp(now, UTC)
        roots = [base]

        t0 = time.perf_counter()
        dry = run_cleanup(tree_chronolog, rules, allowed_roots=roots, now=when, dry_run=True)
        dry_seconds = time.perf_counter() - t0
        assert dry.summary.files_selected == old, dry.summary
        emit(
            "housekeeper_dry_run_scan",
            dry.summary.files_examined / dry_seconds,
            "files/s",
            seconds=round(dry_seconds, 3),
            target=100_000,
            **common,
        )

        t0 = time.perf_counter()
        subprocess.run(["find", tree_find, "-type", "f", "-mtime", "+7", "-delete"], check=True)
        find_seconds = time.perf_counter() - t0
        find_rate = old / find_seconds
        emit("housekeeper_delete_find", find_rate, "files/s", seconds=round(find_seconds, 3))

        t0 = time.perf_counter()
        real = run_cleanup(tree_chronolog, rules, allowed_roots=roots, now=when)
        ours_seconds = time.perf_counter() - t0
        assert real.summary.files_removed == old, real.summary
        ours_rate = old / ours_seconds
        emit(
            "housekeeper_delete_chronolog",
            ours_rate,
            "files/s",
            seconds=round(ours_seconds, 3),
            writers_unchecked=real.writers_unchecked,
        )
        emit("housekeeper_delete_ratio", ours_rate / find_rate, "x", peer="find", target=0.6)

        left_find, left_ours = count_files(tree_find), count_files(tree_chronolog)
        assert left_find == left_ours == args.files - old, (left_find, left_ours)
    finally:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()
