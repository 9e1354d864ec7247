"""Exercise notebooks generated from solutions, and a per-check gradebook of student submissions.

Conventions (authors edit only ``solutions/*.ipynb``):

* **Solution blocks.** In a code cell, the lines between ``### BEGIN SOLUTION`` and
  ``### END SOLUTION`` (at any indentation) are the answer. The exercise gets, at the
  indentation of the ``BEGIN`` line, a ``# TODO`` comment and a
  ``raise NotImplementedError("Exercise: complete the TODO in `fn`.")`` naming the
  enclosing function. ``### BEGIN SOLUTION: <hint>`` shows ``<hint>`` in both.
* **Check cells.** A code cell whose first non-blank line is ``# CHECK: <check-id>``
  (e.g. ``# CHECK: 1.1 isolated learner forgets``) holds plain ``assert`` statements
  with helpful messages. It is visible to the student, copied unchanged into the
  exercise, and is one column of the gradebook. It passes when it runs without
  raising; so ``pytest --nbval-lax SUBMISSION.ipynb`` gives the same verdict (a
  comment marker, unlike a cell tag, survives every editor, Colab included).
* **Generated exercises** (``exercises/<same name>.ipynb``) have no outputs and record
  in ``metadata.mtl_course.content_hash`` a hash of their cells' sources. ``generate``
  refuses to overwrite an exercise whose sources no longer match that hash (someone
  edited it) or that has none, unless ``--force``; running an exercise does not count
  as editing it. Colab links (the badge) to ``solutions/<name>.ipynb`` become links
  to ``exercises/<name>.ipynb``.
* **Hidden checks.** In a solution's check cell, the lines between ``### BEGIN HIDDEN
  CHECKS`` and ``### END HIDDEN CHECKS`` (at top level, after the visible asserts) are
  left out of the exercise and run only by the grader (nbgrader's convention).
* **Grading.** Each ``*.ipynb`` under the submissions folder (recursively, hidden
  folders skipped) is one submission, identified by its path relative to that folder
  (``alice/ex01_tasks_and_transfer.ipynb``); its file name names its reference,
  ``solutions/<name>``. Every check cell is replaced by the reference check (hidden
  checks included), a deleted one is put back, and both are recorded (the
  ``tampered`` column); the checks run with fresh imports and builtins, so redefining
  or monkey-patching what they call does not pass them (see :mod:`.sandbox`). The
  notebook runs on the ``python3`` kernel in a temporary folder with a temporary
  ``HOME``, under a time limit and a memory cap; errors do not stop the run, and a
  check fails if it raised or never ran. Each submission also gets a Markdown
  feedback report with every failed check's message and line.

Command line: ``python -m mtl_course.grading {generate,check-sync,execute,grade} --help``.
"""
from .execute import ExecutionFailedError, execute_in_place
from .generate import (
    OverwriteRefusedError,
    SolutionMarkerError,
    check_sync,
    content_hash,
    generate_exercise,
    generate_exercises,
    strip_solutions,
)
from .feedback import feedback_report, write_feedback
from .gradebook import (
    CheckResult,
    Limits,
    Submission,
    format_summary,
    grade_directory,
    grade_notebook,
    write_gradebook,
)
from .notebooks import Check, GradingError, InvalidNotebookError, find_checks, read_notebook, write_notebook

__all__ = [
    "Check",
    "CheckResult",
    "Limits",
    "feedback_report",
    "write_feedback",
    "ExecutionFailedError",
    "GradingError",
    "InvalidNotebookError",
    "OverwriteRefusedError",
    "SolutionMarkerError",
    "Submission",
    "check_sync",
    "content_hash",
    "execute_in_place",
    "find_checks",
    "format_summary",
    "generate_exercise",
    "generate_exercises",
    "grade_directory",
    "grade_notebook",
    "read_notebook",
    "strip_solutions",
    "write_gradebook",
    "write_notebook",
]
