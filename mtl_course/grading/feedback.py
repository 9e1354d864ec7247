"""One short Markdown report per graded submission, for the student."""
from __future__ import annotations

import os
from pathlib import Path

from .gradebook import Submission
from .notebooks import GradingError, write_text_atomic

# A feedback folder holds this file, so that grading again may replace its reports
# but never writes into a folder it did not make.
MARKER = ".mtl_course_feedback"


def feedback_report(submission: Submission) -> str:
    """The report: the score, a table of the checks, then what to fix for each failed one."""
    lines = [f"# Feedback on `{submission.path}`", ""]
    if not submission.graded:
        return "\n".join(lines + [f"This notebook could not be graded: {submission.error}", ""])
    lines += [f"**{submission.passed} of {submission.total} checks pass.**", ""]
    if submission.error:
        lines += [f"Note: {submission.error}.", ""]
    lines += ["| check | result |", "|---|---|"]
    lines += [f"| {check_id} | {submission.status(check_id)} |" for check_id in submission.expected]
    for check_id in submission.expected:
        result = submission.result(check_id)
        how = submission.tampered.get(check_id)
        if result.passed and not how:
            continue
        lines += ["", f"## {check_id}: {'passed' if result.passed else 'failed'}", ""]
        if how:
            lines += [f"This check cell was {how} in your notebook; it was graded with the original check.", ""]
        if result.passed:
            continue
        lines += ["A hidden check failed:" if result.hidden else "What went wrong:", "", "```text", result.failure, "```"]
        if result.line:
            lines += ["", "at this line of the check:", "", "```python", result.line, "```"]
    return "\n".join(lines) + "\n"


def _report_path(folder: Path, submission: Submission) -> Path:
    return folder / Path(submission.path).with_suffix(".md")


def check_feedback_folder(folder: str | os.PathLike) -> None:
    """Refuse a folder that exists, is not empty and was not made by :func:`write_feedback`."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not (folder / MARKER).exists():
        raise GradingError(
            f"refusing to write feedback into {folder}: it holds files the grader did not write. "
            "Give another --feedback folder, or empty this one."
        )


def write_feedback(submissions: list[Submission], folder: str | os.PathLike) -> list[Path]:
    """Write ``folder/<submission path>.md`` for each submission; returns the paths written.

    Refuses a folder that exists, is not empty and was not made by this function
    (it may hold someone's files).
    """
    folder = Path(folder)
    check_feedback_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("Feedback reports written by `python -m mtl_course.grading grade`.\n")
    written = []
    for submission in submissions:
        path = _report_path(folder, submission)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(feedback_report(submission), path)
        written.append(path)
    return written
