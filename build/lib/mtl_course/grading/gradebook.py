"""Grading submissions: run each notebook in a sandbox and record which checks pass."""
from __future__ import annotations

import csv
import io
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import NotebookNode

from .execute import DEFAULT_TIMEOUT, kernel_env, make_client
from .notebooks import (
    GradingError,
    InvalidNotebookError,
    clear_outputs,
    find_checks,
    read_notebook,
    write_text_atomic,
)


@dataclass
class Submission:
    """The grade of one submitted notebook.

    ``path`` (relative to the submissions folder, ``/``-separated) identifies the
    student, e.g. ``alice/01_finetuning.ipynb``; ``notebook`` is its file name, which
    says which exercise it is. ``expected`` lists the checks of that exercise: every
    check found in any submission with the same file name, so a deleted check cell
    counts as a failed ("missing") check. ``error`` says why a submission could not be
    graded fully (unreadable file, kernel died, timeout).
    """

    path: str
    notebook: str
    results: dict[str, bool] = field(default_factory=dict)
    expected: list[str] = field(default_factory=list)
    readable: bool = True
    error: str = ""

    @property
    def passed(self) -> int:
        """Number of expected checks that passed."""
        return sum(self.results.get(check_id, False) for check_id in self.expected)

    @property
    def total(self) -> int:
        """Number of expected checks."""
        return len(self.expected)

    def status(self, check_id: str) -> str:
        """``pass``, ``fail``, ``missing`` (check cell deleted) or ``""`` (not applicable)."""
        if check_id not in self.expected or not self.readable:
            return ""
        if check_id not in self.results:
            return "missing"
        return "pass" if self.results[check_id] else "fail"


def _run_checks(nb: NotebookNode, timeout: int) -> tuple[dict[str, bool], str]:
    """Run ``nb`` (modifying it) in a temporary folder; return check results and a note on early stops.

    A check passes when every cell carrying its id ran without raising. Cells run
    top to bottom in one kernel, errors do not stop the run, but a cell that times
    out or kills the kernel does: that cell and all later ones count as failed.
    """
    checks = find_checks(nb)
    clear_outputs(nb)
    started: list[int] = []
    ran_ok: dict[int, bool] = {}

    def record(cell: NotebookNode, cell_index: int, execute_reply: dict) -> None:
        ran_ok[cell_index] = execute_reply["content"]["status"] == "ok"

    note = ""
    with tempfile.TemporaryDirectory(prefix="mtl_course_grading_") as cwd:
        client = make_client(
            nb, cwd, timeout, allow_errors=True,
            on_cell_start=lambda cell, cell_index: started.append(cell_index),
            on_cell_executed=record,
        )
        try:
            client.execute(env=kernel_env(), stderr=subprocess.DEVNULL)  # kernel logs are noise here
        except CellTimeoutError:
            note = f"cell {started[-1]} timed out after {timeout} s; later cells did not run"
        except DeadKernelError:
            note = f"the kernel died in cell {started[-1]}; later cells did not run"
    results: dict[str, bool] = {}
    for check in checks:
        results[check.check_id] = results.get(check.check_id, True) and ran_ok.get(check.cell_index, False)
    return results, note


def grade_notebook(path: str | os.PathLike, timeout: int = DEFAULT_TIMEOUT) -> dict[str, bool]:
    """Execute a copy of the notebook at ``path`` (never the file) and say which checks pass.

    ``timeout`` is per cell, in seconds. Raises :class:`InvalidNotebookError` if the
    file is not a notebook.
    """
    results, _ = _run_checks(read_notebook(path), timeout)
    return results


def find_submissions(root: Path) -> list[Path]:
    """Every ``*.ipynb`` under ``root``, skipping hidden folders such as ``.ipynb_checkpoints``."""
    return [
        path
        for path in sorted(root.rglob("*.ipynb"))
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)
    ]


def grade_submission(root: Path, path: Path, timeout: int = DEFAULT_TIMEOUT) -> Submission:
    """Grade one notebook; a file that cannot be graded gives a row with an ``error``."""
    submission = Submission(path.relative_to(root).as_posix(), path.name)
    try:
        submission.results, submission.error = _run_checks(read_notebook(path), timeout)
    except InvalidNotebookError as error:
        submission.readable, submission.error = False, error.reason
    except GradingError as error:  # a malformed '# CHECK:' line
        submission.readable, submission.error = False, str(error)
    return submission


def _set_expected(submissions: list[Submission]) -> None:
    """Give each submission the checks found in any submission of the same exercise."""
    by_notebook: dict[str, list[str]] = {}
    for submission in submissions:
        check_ids = by_notebook.setdefault(submission.notebook, [])
        check_ids += [check_id for check_id in submission.results if check_id not in check_ids]
    for submission in submissions:
        submission.expected = list(by_notebook[submission.notebook])
        if submission.readable and not submission.expected:
            submission.error = "no '# CHECK:' cells found: is this an exercise notebook?"


def grade_directory(
    root: str | os.PathLike,
    timeout: int = DEFAULT_TIMEOUT,
    on_graded: Callable[[Submission], None] | None = None,
) -> list[Submission]:
    """Grade every notebook under ``root`` (recursively); ``on_graded`` is called after each."""
    root = Path(root)
    if not root.is_dir():
        raise GradingError(f"submissions folder not found: {root}")
    submissions = []
    for path in find_submissions(root):
        submissions.append(grade_submission(root, path, timeout))
        if on_graded:
            on_graded(submissions[-1])
    _set_expected(submissions)
    return submissions


def check_columns(submissions: list[Submission]) -> list[str]:
    """All check ids, in the order they first appear."""
    return list(dict.fromkeys(check_id for s in submissions for check_id in s.expected))


def write_gradebook(submissions: list[Submission], out: str | os.PathLike) -> None:
    """Write the CSV gradebook: ``submission, notebook, <check-id>..., passed, total, error``."""
    check_ids = check_columns(submissions)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["submission", "notebook", *check_ids, "passed", "total", "error"])
    for s in submissions:
        writer.writerow([s.path, s.notebook, *map(s.status, check_ids), s.passed, s.total, s.error])
    write_text_atomic(buffer.getvalue(), out)


def format_summary(submissions: list[Submission]) -> str:
    """A short plain-text table: each submission's score, then how many passed each check."""
    width = max([len("submission")] + [len(s.path) for s in submissions])
    lines = [f"{'submission':<{width}}  passed  problem"]
    for s in submissions:
        problem = s.error.splitlines()[0] if s.error else ""
        lines.append(f"{s.path:<{width}}  {f'{s.passed}/{s.total}':>6}  {problem}".rstrip())
    check_ids = check_columns(submissions)
    if check_ids:
        id_width = max(len("check"), *map(len, check_ids))
        lines += ["", f"{'check':<{id_width}}  passed by"]
        for check_id in check_ids:
            graded = [s for s in submissions if check_id in s.expected]
            passed = sum(s.status(check_id) == "pass" for s in graded)
            lines.append(f"{check_id:<{id_width}}  {passed}/{len(graded)}")
    return "\n".join(lines)
