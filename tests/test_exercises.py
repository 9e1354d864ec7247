"""The repository's exercises: in sync with the solutions, and checks that discriminate.

Every check must pass on the solution and fail on the blank exercise generated from
it; otherwise it does not tell a student whether their answer is right. Every
exercise has a hidden check, and each plausible wrong answer in
``tests/wrong_answers.py`` passes the checks a student sees but fails a hidden one.
All of them are graded as the instructor's grader does: with the solution's checks.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from mtl_course.grading import (
    check_sync,
    find_checks,
    generate_exercise,
    grade_notebook,
    read_notebook,
    write_notebook,
)
from mtl_course.grading.generate import has_hidden_checks, strip_solutions
from wrong_answers import WRONG_ANSWERS, WrongAnswer

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))

if not SOLUTIONS:
    pytest.skip("solutions/ holds no notebooks yet: no exercises to check", allow_module_level=True)


def test_exercises_are_in_sync_with_solutions() -> None:
    problems = check_sync(ROOT / "solutions", ROOT / "exercises")
    assert not problems, (
        "exercises/ is not what the generator writes from solutions/:\n  "
        + "\n  ".join(problems)
        + "\nRun `make exercises` (and delete extra exercises)."
    )


@pytest.fixture(scope="module", params=SOLUTIONS, ids=lambda path: path.name)
def graded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Each solution and its blank exercise, executed once: their check results."""
    solution_path: Path = request.param
    solution = read_notebook(solution_path)
    assert find_checks(solution), f"{solution_path.name} has no '# CHECK: <id>' cells"
    exercise_path = tmp_path_factory.mktemp("exercise") / solution_path.name
    write_notebook(generate_exercise(solution), exercise_path)
    return {
        "name": solution_path.name,
        "solution": grade_notebook(solution_path, solution),
        "exercise": grade_notebook(exercise_path, solution),
    }


def test_every_check_passes_on_the_solution(graded: dict) -> None:
    failed = {check_id: r.failure for check_id, r in graded["solution"].items() if not r.passed}
    assert not failed, f"solutions/{graded['name']}: these checks fail on the solution: {failed}"


def test_every_check_fails_on_the_blank_exercise(graded: dict) -> None:
    passed = [check_id for check_id, result in graded["exercise"].items() if result.passed]
    assert not passed, (
        f"exercises/{graded['name']}: these checks pass without any work from the student, "
        f"so they cannot tell a right answer from a blank one: {passed}"
    )


@pytest.mark.parametrize("solution_path", SOLUTIONS, ids=lambda path: path.name)
def test_every_exercise_has_a_hidden_check_that_catches_a_wrong_answer(solution_path: Path) -> None:
    nb = read_notebook(solution_path)
    hidden = [c.check_id for c in find_checks(nb) if has_hidden_checks(nb.cells[c.cell_index].source)]
    assert hidden, f"{solution_path.name} has no '### BEGIN HIDDEN CHECKS' block in a check cell"
    caught = [w for w in WRONG_ANSWERS if w.notebook == solution_path.name and w.check in hidden]
    assert caught, f"tests/wrong_answers.py has no wrong answer for the hidden checks of {solution_path.name}"


def _with_wrong_answer(wrong: WrongAnswer):
    """The solution with ``wrong`` in place, cut after the check that must catch it."""
    nb = read_notebook(ROOT / "solutions" / wrong.notebook)
    cells = [cell for cell in nb.cells if cell.cell_type == "code" and wrong.old in cell.source]
    assert len(cells) == 1 and cells[0].source.count(wrong.old) == 1, (
        f"{wrong.notebook}: the text of {wrong.mistake!r} must occur exactly once in the code")
    assert wrong.old not in strip_solutions(cells[0].source), (
        f"{wrong.notebook}: {wrong.mistake!r} must change what the student writes (inside a solution block)")
    cells[0].source = cells[0].source.replace(wrong.old, wrong.new)
    checks = {check.check_id: check.cell_index for check in find_checks(nb)}
    assert wrong.check in checks, f"{wrong.notebook} has no check {wrong.check!r}"
    nb.cells = nb.cells[: checks[wrong.check] + 1]
    return nb


@pytest.mark.parametrize("wrong", WRONG_ANSWERS, ids=lambda w: f"{w.notebook.split('_')[0]}: {w.mistake}")
def test_a_hidden_check_catches_each_wrong_answer(wrong: WrongAnswer, tmp_path: Path) -> None:
    submission = _with_wrong_answer(wrong)
    reference = read_notebook(ROOT / "solutions" / wrong.notebook)
    reference.cells = reference.cells[: len(submission.cells)]  # the checks up to the one that catches it
    write_notebook(submission, tmp_path / wrong.notebook)
    results = grade_notebook(tmp_path / wrong.notebook, reference)
    target = results.pop(wrong.check)
    got = "a pass" if target.passed else f"{target.failure} in the {'hidden' if target.hidden else 'visible'} part"
    assert not target.passed and target.hidden, (
        f"{wrong.notebook}: {wrong.mistake!r} should pass the visible part of check {wrong.check!r} and fail "
        f"its hidden part; got {got}")
    failed_before = {check_id: r.failure for check_id, r in results.items() if not r.passed}
    assert not failed_before, f"{wrong.notebook}: {wrong.mistake!r} already fails earlier checks: {failed_before}"
