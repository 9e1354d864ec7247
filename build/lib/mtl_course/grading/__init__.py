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
* **Grading.** Each ``*.ipynb`` under the submissions folder (recursively, hidden
  folders skipped) is one submission, identified by its path relative to that folder
  (``alice/01_finetuning.ipynb``); its file name says which exercise it is. The
  notebook runs on the ``python3`` kernel in a temporary folder, errors do not stop
  the run, and a check fails if its cell raised or never ran (a cell timed out or the
  kernel died). A check cell deleted by the student counts as ``missing`` (failed).

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
from .gradebook import Submission, format_summary, grade_directory, grade_notebook, write_gradebook
from .notebooks import Check, GradingError, InvalidNotebookError, find_checks, read_notebook, write_notebook

__all__ = [
    "Check",
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
