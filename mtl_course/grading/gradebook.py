"""Grading submissions: run each notebook with the instructor's checks, in a bounded sandbox.

For each submission the grader builds the notebook to run (:mod:`.reference`: the
reference checks in place of the student's, deleted checks put back), runs it in a
temporary folder with a temporary ``HOME``, a memory cap and a time limit, and
records for every check whether it passed, and why not.
"""
from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import NotebookNode

from .execute import DEFAULT_TIMEOUT, kernel_env, make_client
from .kernel import MEMORY_LIMIT_VARIABLE, LimitedKernelManager
from .notebooks import GradingError, InvalidNotebookError, clear_outputs, read_notebook, write_text_atomic
from .reference import GradedNotebook, build_graded_notebook, reference_checks

OUT_OF_MEMORY = ("MemoryError", "can't allocate memory", "Cannot allocate memory")


@dataclass(frozen=True)
class Limits:
    """What one submission may use: seconds per cell, seconds in all, bytes of memory (0: no cap).

    ``kill_grace`` is how long the grader waits past a limit for the kernel to stop on
    its own before it kills the kernel's process group (and as long again after that
    before it gives the run up).
    """

    cell_timeout: int = DEFAULT_TIMEOUT
    time_limit: int = 1800
    memory_limit: int = 4 << 30
    kill_grace: int = 60


@dataclass
class CheckResult:
    """One check of one submission.

    ``failure`` is the error a failed check raised (``AssertionError: <message>``) or why
    it did not run; ``line`` is the check's line that raised it (left empty when the
    failure was in a hidden check, whose source the student does not see).
    """

    passed: bool
    failure: str = ""
    line: str = ""
    hidden: bool = False


@dataclass
class Submission:
    """The grade of one submitted notebook.

    ``path`` (relative to the submissions folder, ``/``-separated) identifies the
    student, e.g. ``alice/ex01_tasks_and_transfer.ipynb``; ``notebook`` is its file
    name, which names its reference solution. ``expected`` lists the reference's
    checks. ``tampered`` maps a check id to ``edited`` or ``deleted``; ``suspicious``
    lists grading machinery the student's code mentions. ``error`` says why a
    submission could not be graded fully (unreadable file, no reference, kernel died,
    time or memory limit). ``graded`` is False when nothing could run.
    """

    path: str
    notebook: str
    results: dict[str, CheckResult] = field(default_factory=dict)
    expected: list[str] = field(default_factory=list)
    tampered: dict[str, str] = field(default_factory=dict)
    suspicious: list[str] = field(default_factory=list)
    graded: bool = True
    error: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> int:
        """Number of expected checks that passed."""
        return sum(self.result(check_id).passed for check_id in self.expected)

    @property
    def total(self) -> int:
        """Number of expected checks."""
        return len(self.expected)

    def result(self, check_id: str) -> CheckResult:
        """The result of one check (a failed one if it never ran)."""
        return self.results.get(check_id, CheckResult(False, "the check did not run"))

    def status(self, check_id: str) -> str:
        """``pass``, ``fail`` or ``""`` (not applicable); the ``tampered`` column says what was changed."""
        if check_id not in self.expected or not self.graded:
            return ""
        return "pass" if self.result(check_id).passed else "fail"

    def tampered_text(self) -> str:
        """The gradebook's ``tampered`` cell: edited or deleted checks, then suspicious code."""
        parts = [f"{check_id} {how}" for check_id, how in self.tampered.items()]
        if self.suspicious:
            parts.append("code mentions " + ", ".join(self.suspicious))
        return "; ".join(parts)


def _stdout(cell: NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def _error_of(cell: NotebookNode) -> str:
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    return f"{errors[-1]['ename']}: {errors[-1]['evalue']}" if errors else ""


def _check_result(graded: GradedNotebook, cell: NotebookNode, ran_ok: bool | None) -> CheckResult:
    """Read one check cell's outcome back from its outputs."""
    if ran_ok is None:
        return CheckResult(False, "the check did not run (an earlier cell stopped the notebook)")
    passed = failed = None
    for line in _stdout(cell).splitlines():
        if line.startswith(f"{graded.token} passed "):
            passed = True
        elif line.startswith(f"{graded.token} failed "):
            failed = json.loads(line.split(" ", 2)[2])
    if ran_ok and passed:
        return CheckResult(True)
    if failed:
        hidden = failed["part"] == "hidden"
        return CheckResult(False, f"{failed['type']}: {failed['message']}", "" if hidden else failed["line"], hidden)
    return CheckResult(False, _error_of(cell) or "the check did not report a result (was it skipped?)")


def _sandbox_env(home: Path, limits: Limits) -> dict[str, str]:
    """The kernel's environment: a temporary HOME, the course's data cache, the memory cap."""
    env = kernel_env()
    data = env.get("MTL_COURSE_DATA") or str(Path.home() / ".cache" / "mtl_course")
    env.update(
        HOME=str(home),
        USERPROFILE=str(home),
        IPYTHONDIR=str(home / ".ipython"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        MTL_COURSE_DATA=str(Path(data).expanduser().absolute()),
    )
    env[MEMORY_LIMIT_VARIABLE] = str(limits.memory_limit)
    return env


def _kill_kernel(client) -> None:
    """Kill the kernel's process group (the kernel and whatever it started), if it still runs."""
    provisioner = getattr(getattr(client, "km", None), "provisioner", None)
    process = getattr(provisioner, "process", None)
    if process is None:
        return
    pgid = getattr(provisioner, "pgid", None)
    try:
        if pgid and hasattr(os, "killpg") and pgid != os.getpgrp():
            os.killpg(pgid, signal.SIGKILL)
        else:
            process.kill()
    except OSError:  # ProcessLookupError included: it had already stopped
        pass


def _execute_watched(client, env: dict[str, str], limit_at: Callable[[], float], grace: float) -> tuple[BaseException | None, bool]:
    """Run ``client.execute`` so that a hung kernel cannot hang the grader.

    nbclient's own per-cell timeout stops an ordinary slow cell. If the run is still
    going ``grace`` seconds after ``limit_at()`` (the monotonic time by which the
    current cell had to finish), the kernel is killed; if even that does not end the
    run within ``grace`` more seconds, the run is given up (its thread is a daemon).
    Returns the exception ``execute`` raised (or None) and whether the kernel was killed.
    """
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            client.execute(env=env, stderr=subprocess.DEVNULL)
            outcome.append(None)
        except BaseException as error:  # handed to the caller, which decides
            outcome.append(error)

    thread = threading.Thread(target=target, name="grading-run", daemon=True)
    thread.start()
    killed_at = None
    while thread.is_alive():
        thread.join(0.5)
        now = time.monotonic()
        if killed_at is None and now > limit_at() + grace:
            _kill_kernel(client)
            killed_at = now
        elif killed_at is not None and now > killed_at + grace:
            return None, True
    return (outcome[0] if outcome else None), killed_at is not None


def _run(graded: GradedNotebook, limits: Limits, copy_of: Path | None = None) -> tuple[dict[str, CheckResult], str]:
    """Run a graded notebook in a temporary folder; return each check's result and a note on early stops."""
    nb = graded.nb
    clear_outputs(nb)
    started: list[tuple[int, float]] = []  # (cell index, monotonic start time)
    ran_ok: dict[int, bool] = {}

    def record(cell: NotebookNode, cell_index: int, execute_reply: dict) -> None:
        ran_ok[cell_index] = execute_reply["content"]["status"] == "ok"

    begun = time.monotonic()
    deadline = begun + limits.time_limit

    def cell_timeout(cell: NotebookNode) -> int:
        return max(1, min(limits.cell_timeout, int(deadline - time.monotonic())))

    def limit_at() -> float:
        """When the running cell (or, before the first cell, the kernel's start) had to end."""
        start = started[-1][1] if started else begun
        return min(start + limits.cell_timeout, deadline)

    def where() -> str:
        return graded.describe_cell(started[-1][0]) if started else "the kernel's start"

    note = ""
    with tempfile.TemporaryDirectory(prefix="mtl_course_grading_", ignore_cleanup_errors=True) as tmp:
        work, home = Path(tmp) / "work", Path(tmp) / "home"
        work.mkdir()
        home.mkdir()
        if copy_of is not None:
            shutil.copyfile(copy_of, work / copy_of.name)
        client = make_client(
            nb, work, limits.cell_timeout, allow_errors=True,
            on_cell_start=lambda cell, cell_index: started.append((cell_index, time.monotonic())),
            on_cell_executed=record,
        )
        client.timeout_func = cell_timeout
        client.kernel_manager_class = LimitedKernelManager
        error, killed = _execute_watched(client, _sandbox_env(home, limits), limit_at, limits.kill_grace)
        if killed:
            late = round(time.monotonic() - limit_at())
            note = f"{where()} stopped responding; the grader killed its kernel {late} s past its limit; later cells did not run"
        elif isinstance(error, CellTimeoutError):
            if time.monotonic() >= deadline - 1:
                note = f"the submission ran past its time limit of {limits.time_limit} s in {where()}"
            else:
                note = f"{where()} timed out after {limits.cell_timeout} s; later cells did not run"
        elif isinstance(error, DeadKernelError):
            note = f"the kernel died in {where()}; later cells did not run"
        elif error is not None:
            raise error
    for index, cell in enumerate(nb.cells):
        if any(marker in _error_of(cell) for marker in OUT_OF_MEMORY):
            gigabytes = limits.memory_limit / 2**30
            note = note or f"{graded.describe_cell(index)} ran out of memory (limit {gigabytes:g} GB)"
    results: dict[str, CheckResult] = {}
    for check_id, indices in graded.check_cells.items():
        outcomes = [_check_result(graded, nb.cells[i], ran_ok.get(i)) for i in indices]
        results[check_id] = next((o for o in outcomes if not o.passed), outcomes[0])
    return results, note


def _reference_for(reference: str | os.PathLike | NotebookNode | None, path: Path) -> NotebookNode:
    if reference is None:
        return read_notebook(path)
    if isinstance(reference, NotebookNode):
        return reference
    return read_notebook(reference)


def grade_notebook(
    path: str | os.PathLike,
    reference: str | os.PathLike | NotebookNode | None = None,
    timeout: int = DEFAULT_TIMEOUT,
    limits: Limits | None = None,
) -> dict[str, CheckResult]:
    """Run a copy of the notebook at ``path`` (never the file) with the checks of ``reference``.

    ``reference`` is the solution notebook (path or notebook) whose checks, hidden ones
    included, replace the notebook's own; ``None`` grades the notebook by its own
    checks. ``timeout`` is per cell, in seconds. Raises :class:`InvalidNotebookError`
    if a file is not a notebook.
    """
    path = Path(path)
    limits = limits or Limits(cell_timeout=timeout)
    graded = build_graded_notebook(read_notebook(path), _reference_for(reference, path))
    return _run(graded, limits, copy_of=path)[0]


def find_submissions(root: Path) -> list[Path]:
    """Every ``*.ipynb`` under ``root``, skipping hidden folders such as ``.ipynb_checkpoints``."""
    return [
        path
        for path in sorted(root.rglob("*.ipynb"))
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)
    ]


def grade_submission(root: Path, path: Path, solutions: Path, limits: Limits = Limits()) -> Submission:
    """Grade one notebook against ``solutions/<its name>``; a file that cannot be graded gives a row with an ``error``."""
    submission = Submission(path.relative_to(root).as_posix(), path.name)
    started = time.monotonic()
    reference_path = solutions / path.name
    if not reference_path.is_file():
        submission.graded = False
        submission.error = f"no reference solution {reference_path} (is the file name the exercise's?)"
        return submission
    reference = read_notebook(reference_path)
    submission.expected = list(reference_checks(reference))
    try:
        graded = build_graded_notebook(read_notebook(path), reference)
    except InvalidNotebookError as error:
        submission.graded, submission.error = False, error.reason
        return submission
    except GradingError as error:  # a malformed '# CHECK:' line
        submission.graded, submission.error = False, str(error)
        return submission
    submission.tampered, submission.suspicious = graded.tampered, graded.suspicious
    submission.results, submission.error = _run(graded, limits, copy_of=path)
    submission.seconds = time.monotonic() - started
    return submission


def grade_directory(
    root: str | os.PathLike,
    solutions: str | os.PathLike = "solutions",
    limits: Limits = Limits(),
    jobs: int = 1,
    on_graded: Callable[[Submission], None] | None = None,
) -> list[Submission]:
    """Grade every notebook under ``root`` (recursively), ``jobs`` at a time; ``on_graded`` is called after each.

    The submissions come back in path order whatever ``jobs`` is; each runs in its own
    kernel and temporary folder, so the results do not depend on ``jobs``.
    """
    root, solutions = Path(root), Path(solutions)
    if not root.is_dir():
        raise GradingError(f"submissions folder not found: {root}")
    if not solutions.is_dir():
        raise GradingError(f"solutions folder not found: {solutions} (give --solutions: the reference notebooks)")
    if jobs < 1:
        raise GradingError(f"--jobs must be at least 1, not {jobs}")
    paths = find_submissions(root)
    by_path: dict[Path, Submission] = {}
    if jobs == 1:
        for path in paths:
            by_path[path] = grade_submission(root, path, solutions, limits)
            if on_graded:
                on_graded(by_path[path])
    else:
        context = multiprocessing.get_context("spawn")  # no forked copies of zmq sockets or threads
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = {pool.submit(grade_submission, root, path, solutions, limits): path for path in paths}
            for future in as_completed(futures):
                by_path[futures[future]] = future.result()
                if on_graded:
                    on_graded(by_path[futures[future]])
    return [by_path[path] for path in paths]


def check_columns(submissions: list[Submission]) -> list[str]:
    """All check ids, in the order they first appear."""
    return list(dict.fromkeys(check_id for s in submissions for check_id in s.expected))


def check_gradebook_path(out: str | os.PathLike) -> None:
    """Refuse to write the gradebook over a file that is not an earlier gradebook."""
    out = Path(out)
    if not out.absolute().parent.is_dir():
        raise GradingError(f"cannot write {out}: its folder does not exist")
    if out.exists():
        with open(out, encoding="utf-8", errors="replace") as f:
            header = f.readline()
        if not header.startswith("submission,notebook,"):
            raise GradingError(f"refusing to overwrite {out}: it is not a gradebook. Give another --out.")


def write_gradebook(submissions: list[Submission], out: str | os.PathLike) -> None:
    """Write the CSV gradebook: ``submission, notebook, <check-id>..., passed, total, tampered, error``.

    An earlier gradebook at ``out`` is replaced; any other file there is refused.
    """
    check_gradebook_path(out)
    check_ids = check_columns(submissions)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["submission", "notebook", *check_ids, "passed", "total", "tampered", "error"])
    for s in submissions:
        writer.writerow(
            [s.path, s.notebook, *map(s.status, check_ids), s.passed, s.total, s.tampered_text(), s.error]
        )
    write_text_atomic(buffer.getvalue(), out)


def format_summary(submissions: list[Submission]) -> str:
    """A short plain-text table: each submission's score, then how many passed each check."""
    width = max([len("submission")] + [len(s.path) for s in submissions])
    lines = [f"{'submission':<{width}}  passed  problem"]
    for s in submissions:
        problems = [text for text in (s.tampered_text() and f"tampered: {s.tampered_text()}", s.error) if text]
        problem = "; ".join(p.splitlines()[0] for p in problems)
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
