"""Command line: ``python -m mtl_course.grading {generate,check-sync,execute,grade} ...``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __doc__ as package_doc
from .execute import DEFAULT_TIMEOUT, execute_in_place
from .generate import check_sync, generate_exercises
from .feedback import check_feedback_folder, write_feedback
from .gradebook import Limits, Submission, check_gradebook_path, format_summary, grade_directory, write_gradebook
from .notebooks import GradingError


def _generate(args: argparse.Namespace) -> int:
    for written in generate_exercises(args.solutions, args.exercises, force=args.force):
        print(f"{'wrote' if written.changed else 'up to date'}: {written.path}")
    return 0


def _check_sync(args: argparse.Namespace) -> int:
    problems = check_sync(args.solutions, args.exercises)
    if not problems:
        print(f"{args.exercises}/ is in sync with {args.solutions}/")
        return 0
    print(f"{args.exercises}/ is out of sync with {args.solutions}/:", *problems, sep="\n  ", file=sys.stderr)
    print("Run `python -m mtl_course.grading generate` (and delete extra files).", file=sys.stderr)
    return 1


def _execute(args: argparse.Namespace) -> int:
    failures = 0
    for path in args.notebooks:
        print(f"executing {path} ...", flush=True)
        try:
            execute_in_place(path, timeout=args.timeout)
        except GradingError as error:
            print(f"error: {error}", file=sys.stderr)
            failures += 1
    if failures:
        print(f"{failures} of {len(args.notebooks)} notebook(s) failed; they were left unchanged.", file=sys.stderr)
    return 1 if failures else 0


def _report(submission: Submission) -> None:
    """Progress line for one graded submission; problems go to stderr."""
    if not submission.graded:
        print(f"error: {submission.path}: {submission.error}", file=sys.stderr)
        return
    print(
        f"graded {submission.path}: {submission.passed} of {submission.total} checks pass "
        f"({submission.seconds:.0f} s)",
        flush=True,
    )
    if submission.tampered or submission.suspicious:
        print(f"warning: {submission.path}: tampered: {submission.tampered_text()}", file=sys.stderr)
    if submission.error:
        print(f"warning: {submission.path}: {submission.error}", file=sys.stderr)


def _grade(args: argparse.Namespace) -> int:
    out = Path(args.out)
    feedback = Path(args.feedback) if args.feedback else out.with_name(out.stem + "-feedback")
    check_gradebook_path(out)  # before hours of grading, not after
    check_feedback_folder(feedback)
    limits = Limits(args.timeout, args.time_limit, int(args.memory_limit * 2**30))
    submissions = grade_directory(args.submissions, args.solutions, limits, args.jobs, on_graded=_report)
    if not submissions:
        print(f"error: no *.ipynb files under {args.submissions}", file=sys.stderr)
        return 1
    write_gradebook(submissions, out)
    write_feedback(submissions, feedback)
    print(f"\n{format_summary(submissions)}\n\nGradebook written to {out}; one report per submission in {feedback}/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m mtl_course.grading``."""
    summary, conventions = package_doc.split("\n\n", 1)
    parser = argparse.ArgumentParser(
        prog="python -m mtl_course.grading",
        description=summary,
        epilog=conventions,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def folders(command: argparse.ArgumentParser) -> None:
        command.add_argument("--solutions", default="solutions", help="solutions folder (default: %(default)s)")
        command.add_argument("--exercises", default="exercises", help="exercises folder (default: %(default)s)")

    def timeout(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--timeout", type=int, default=DEFAULT_TIMEOUT, help="seconds per cell (default: %(default)s)"
        )

    generate = commands.add_parser("generate", help="write exercises/*.ipynb from solutions/*.ipynb")
    folders(generate)
    generate.add_argument(
        "--force", action="store_true", help="overwrite exercise files even if someone edited them"
    )
    generate.set_defaults(run=_generate)

    sync = commands.add_parser(
        "check-sync", help="fail if exercises/ differs from what `generate` would write (missing, stale, extra)"
    )
    folders(sync)
    sync.set_defaults(run=_check_sync)

    execute = commands.add_parser(
        "execute", help="re-execute notebooks in place (their stored outputs are the nbval reference)"
    )
    execute.add_argument("notebooks", nargs="+", metavar="NOTEBOOK")
    timeout(execute)
    execute.set_defaults(run=_execute)

    grade = commands.add_parser(
        "grade",
        help="run every submitted notebook and write a per-check CSV gradebook",
        description="Run every *.ipynb under SUBMISSIONS_DIR (recursively; the student is the "
        "notebook's path relative to it) with the checks of the solution of the same name "
        "(hidden checks included; edited or deleted check cells are restored and reported), "
        "each in a temporary folder with a temporary HOME, under time and memory limits, "
        "without modifying it; record pass/fail for each check and write a feedback report "
        "for each submission.",
    )
    grade.add_argument("submissions", metavar="SUBMISSIONS_DIR")
    grade.add_argument("--out", required=True, help="CSV gradebook to write, e.g. grades.csv")
    grade.add_argument("--solutions", default="solutions", help="reference notebooks (default: %(default)s)")
    grade.add_argument(
        "--feedback", help="folder for the per-submission reports (default: next to --out, OUT-feedback/)"
    )
    grade.add_argument("--jobs", type=int, default=1, help="submissions graded in parallel (default: %(default)s)")
    grade.add_argument(
        "--time-limit", type=int, default=Limits.time_limit,
        help="seconds per submission, all cells together (default: %(default)s)",
    )
    grade.add_argument(
        "--memory-limit", type=float, default=Limits.memory_limit / 2**30,
        help="GB of memory per submission, 0 for no cap (default: %(default)g)",
    )
    timeout(grade)
    grade.set_defaults(run=_grade)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except GradingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
