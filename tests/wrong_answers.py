"""Plausible wrong answers to the exercises, each caught only by a hidden check.

Each entry replaces one piece of a solution (text inside a ``### BEGIN SOLUTION``
block) by a mistake a student could make. ``tests/test_exercises.py`` grades the
changed solution against the reference checks and requires that every visible
check up to ``check`` passes while the hidden part of ``check`` fails: the hidden
check is what tells this answer from a right one.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WrongAnswer:
    """One plausible mistake in ``notebook`` and the check whose hidden part catches it."""

    notebook: str  # file name in solutions/, e.g. "ex01_tasks_and_transfer.ipynb"
    mistake: str  # what the student got wrong, in a few words (the test's id)
    old: str  # exact text of the solution, inside a solution block, found once in the notebook
    new: str  # the wrong answer that replaces it
    check: str  # id of the check cell whose hidden part fails (its visible part passes)


WRONG_ANSWERS: list[WrongAnswer] = [
]
