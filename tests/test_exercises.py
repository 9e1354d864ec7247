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

