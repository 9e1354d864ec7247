"""Time to grade a class: N copies of one exercise's solution, one at a time against --jobs 2.

Both runs grade the same folder with the same reference; the script checks that
their gradebooks agree (every check passed, the same rows) before it reports the
wall times, the time per submission and the ratio, with the machine.

    .venv/bin/python benchmarks/grading_time.py [--copies 50] [--notebook ex06_finetuning_vs_frozen.ipynb]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from mtl_course.grading import grade_directory

ROOT = Path(__file__).resolve().parents[1]


def grade_class(submissions: Path, solutions: Path, jobs: int) -> tuple[float, list[tuple[str, int, int]]]:
    """Wall seconds to grade the folder, and each submission's (path, passed, total)."""
    started = time.perf_counter()
    graded = grade_directory(submissions, solutions, jobs=jobs)
    seconds = time.perf_counter() - started
    return seconds, [(s.path, s.passed, s.total) for s in graded]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=50)
    parser.add_argument("--notebook", default="ex06_finetuning_vs_frozen.ipynb")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    solutions = ROOT / "solutions"
    with tempfile.TemporaryDirectory() as tmp:
        submissions = Path(tmp)
        for i in range(args.copies):
            (submissions / f"student{i:03d}").mkdir()
            shutil.copyfile(solutions / args.notebook, submissions / f"student{i:03d}" / args.notebook)
        times, books = {}, {}
        for jobs in args.jobs:
            times[jobs], books[jobs] = grade_class(submissions, solutions, jobs)
    first = books[args.jobs[0]]
    assert all(passed == total > 0 for _, passed, total in first), "every copy of the solution must pass"
    assert all(book == first for book in books.values()), "the gradebooks differ between --jobs values"
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}")
    print(f"{args.copies} copies of {args.notebook}, {first[0][2]} checks each; gradebooks identical")
    for jobs in args.jobs:
        ratio = times[args.jobs[0]] / times[jobs]
        print(f"--jobs {jobs}: {times[jobs]:7.1f} s in all, {times[jobs] / args.copies:5.2f} s per submission, "
              f"speed-up {ratio:.2f}x")


if __name__ == "__main__":
    main()
