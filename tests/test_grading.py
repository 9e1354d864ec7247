"""The grading pipeline on tiny fixture notebooks: generate, check-sync, execute, grade."""
from __future__ import annotations

import contextlib
import csv
import io
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat import NotebookNode

from mtl_course.grading import (
    GradingError,
    Limits,
    OverwriteRefusedError,
    SolutionMarkerError,
    check_sync,
    find_checks,
    generate_exercise,
    generate_exercises,
    grade_notebook,
    read_notebook,
    write_notebook,
)
from mtl_course.grading.__main__ import main
from mtl_course.grading.gradebook import grade_submission

SOLUTION_SOURCE = '''\
def clip_add(a, b, limit):
    """a + b, clipped to [-limit, limit]."""
    ### BEGIN SOLUTION
    total = a + b
    ### END SOLUTION
    if abs(total) > limit:
        ### BEGIN SOLUTION: clip total to the limit
        total = limit if total > 0 else -limit
        ### END SOLUTION
    return total'''
WRONG_SOURCE = '''\
def clip_add(a, b, limit):
    return a + b  # forgets to clip'''
CHECK_ADDS = '# CHECK: adds\nassert clip_add(1, 2, 10) == 3, "clip_add(1, 2, 10) should be 3"'
CHECK_CLIPS = '# CHECK: clips\nassert clip_add(8, 5, 10) == 10, "clip_add(8, 5, 10) should be clipped to 10"'
BADGE = "[Open in Colab](https://colab.research.google.com/github/o/r/blob/main/{}/tiny.ipynb)"
MENTION = "The reference answer is solutions/tiny.ipynb."


def make_solution() -> NotebookNode:
    """A solution notebook: a badge, a function with two solution blocks, two check cells."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    solution = nbformat.v4.new_code_cell(SOLUTION_SOURCE, execution_count=1)
    solution.outputs = [nbformat.v4.new_output("stream", name="stdout", text="defined\n")]
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# Tiny exercise\n{BADGE.format('solutions')}\n{MENTION}"),
        solution,
        nbformat.v4.new_code_cell(CHECK_ADDS, execution_count=2),
        nbformat.v4.new_code_cell(CHECK_CLIPS, execution_count=3),
    ]
    return nb


def with_cell_source(nb: NotebookNode, index: int, source: str) -> NotebookNode:
    """A copy of ``nb`` whose cell ``index`` holds ``source``."""
    nb = nbformat.from_dict(nb)
    nb.cells[index].source = source
    return nb


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """``solutions/tiny.ipynb`` and an empty ``exercises/`` next to it."""
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    write_notebook(make_solution(), solutions / "tiny.ipynb")
    return solutions, exercises


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run ``python -m mtl_course.grading ARGS`` in-process; return (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(arg) for arg in args])
    return status, out.getvalue(), err.getvalue()


# --- generation -------------------------------------------------------------


def test_generated_exercise_has_todos_and_no_solution() -> None:
    solution = make_solution()
    exercise = generate_exercise(solution)
    source = exercise.cells[1].source
    assert source.splitlines()[2:4] == [
        "    # TODO: write your code here, replacing the `raise` line below.",
        '    raise NotImplementedError("Exercise: complete the TODO in `clip_add`.")',
    ]
    assert "        # TODO: clip total to the limit" in source.splitlines()
    compile(source, "exercise cell", "exec")  # still valid Python
    text = nbformat.writes(exercise)
    assert "total = a + b" not in text and "limit if total" not in text and "SOLUTION" not in text
    assert all(not c.outputs and c.execution_count is None for c in exercise.cells if c.cell_type == "code")
    assert [c.source for c in exercise.cells[2:]] == [CHECK_ADDS, CHECK_CLIPS]
    assert find_checks(exercise) == find_checks(solution)
    assert [check.check_id for check in find_checks(exercise)] == ["adds", "clips"]
    assert solution.cells[1].source == SOLUTION_SOURCE, "the solution itself must not change"


@pytest.mark.parametrize(
    "source, problem",
    [
        ("### BEGIN SOLUTION\nx = 1", "without a matching"),
        ("x = 1\n### END SOLUTION", "without a BEGIN"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "nested"),
    ],
)
def test_unpaired_solution_markers_are_reported(source: str, problem: str) -> None:
    nb = with_cell_source(make_solution(), 1, source)
    with pytest.raises(SolutionMarkerError, match=f"cell 1.*{problem}"):
        generate_exercise(nb)


def test_check_cell_may_not_hold_a_solution() -> None:
    nb = with_cell_source(make_solution(), 2, CHECK_ADDS + "\n### BEGIN SOLUTION\n### END SOLUTION")
    with pytest.raises(SolutionMarkerError, match="cell 2 is a check cell"):
        generate_exercise(nb)


def test_check_ids_must_be_unique_in_a_solution() -> None:
    nb = with_cell_source(make_solution(), 3, CHECK_ADDS)
    with pytest.raises(GradingError, match="cell 3: check id 'adds' is used twice"):
        generate_exercise(nb)


HIDDEN_CHECK = CHECK_ADDS + "\n### BEGIN HIDDEN CHECKS\nassert clip_add(-1, -2, 10) == -3\n### END HIDDEN CHECKS"


def test_hidden_checks_are_left_out_of_the_exercise() -> None:
    exercise = generate_exercise(with_cell_source(make_solution(), 2, HIDDEN_CHECK))
    assert exercise.cells[2].source == CHECK_ADDS
    assert "HIDDEN" not in nbformat.writes(exercise) and "-3" not in nbformat.writes(exercise)


@pytest.mark.parametrize(
    "source, problem",
    [
        (CHECK_ADDS + "\n### BEGIN HIDDEN CHECKS\nassert True", "without a matching"),
        (CHECK_ADDS + "\n### END HIDDEN CHECKS", "without a BEGIN"),
        (CHECK_ADDS + "\nif True:\n    ### BEGIN HIDDEN CHECKS\n    pass\n    ### END HIDDEN CHECKS", "indented"),
    ],
)
def test_misplaced_hidden_check_markers_are_reported(source: str, problem: str) -> None:
    with pytest.raises(SolutionMarkerError, match=f"cell 2.*{problem}"):
        generate_exercise(with_cell_source(make_solution(), 2, source))


def test_hidden_checks_belong_in_check_cells() -> None:
    nb = with_cell_source(make_solution(), 1, "x = 1\n### BEGIN HIDDEN CHECKS\nassert x\n### END HIDDEN CHECKS")
    with pytest.raises(SolutionMarkerError, match="cell 1 has hidden checks but is not a '# CHECK:' cell"):
        generate_exercise(nb)


def test_generate_writes_exercises_and_rewrites_the_badge(folders: tuple[Path, Path]) -> None:
    solutions, exercises = folders
    status, out, _ = run_cli("generate", "--solutions", solutions, "--exercises", exercises)
    assert status == 0 and f"wrote: {exercises / 'tiny.ipynb'}" in out
    exercise = read_notebook(exercises / "tiny.ipynb")
    assert exercise.cells[0].source == f"# Tiny exercise\n{BADGE.format('exercises')}\n{MENTION}"
    status, out, _ = run_cli("generate", "--solutions", solutions, "--exercises", exercises)
    assert status == 0 and "up to date" in out


def test_generate_refuses_to_overwrite_an_edited_exercise(folders: tuple[Path, Path]) -> None:
    solutions, exercises = folders
    generate_exercises(solutions, exercises)
    exercise_path = exercises / "tiny.ipynb"
    edited = with_cell_source(read_notebook(exercise_path), 1, "def clip_add(a, b, limit):\n    return 0")
    write_notebook(edited, exercise_path)
    before = exercise_path.read_bytes()

    with pytest.raises(OverwriteRefusedError, match="tiny.ipynb was edited"):
        generate_exercises(solutions, exercises)
    status, _, err = run_cli("generate", "--solutions", solutions, "--exercises", exercises)
    assert status == 1 and str(exercise_path) in err and "--force" in err
    assert exercise_path.read_bytes() == before, "a refused run must not touch the file"

    generate_exercises(solutions, exercises, force=True)
    assert "return 0" not in exercise_path.read_text()


def test_generate_refuses_a_file_it_did_not_write(folders: tuple[Path, Path]) -> None:
    solutions, exercises = folders
    exercises.mkdir()
    write_notebook(nbformat.v4.new_notebook(), exercises / "tiny.ipynb")
    with pytest.raises(OverwriteRefusedError, match="no generator hash"):
        generate_exercises(solutions, exercises)


def test_generate_overwrites_an_exercise_that_was_only_run(folders: tuple[Path, Path]) -> None:
    solutions, exercises = folders
    generate_exercises(solutions, exercises)
    exercise_path = exercises / "tiny.ipynb"
    ran = read_notebook(exercise_path)
    ran.cells[1].execution_count = 1
    write_notebook(ran, exercise_path)
    write_notebook(with_cell_source(make_solution(), 0, "# Renamed"), solutions / "tiny.ipynb")
    written = generate_exercises(solutions, exercises)
    assert [(w.path, w.changed) for w in written] == [(exercise_path, True)]
    assert read_notebook(exercise_path).cells[0].source == "# Renamed"


def test_check_sync_detects_missing_stale_and_extra(folders: tuple[Path, Path]) -> None:
    solutions, exercises = folders
    exercises.mkdir()
    assert check_sync(solutions, exercises) == [f"missing: {exercises / 'tiny.ipynb'}"]

    generate_exercises(solutions, exercises)
    assert check_sync(solutions, exercises) == []
    assert run_cli("check-sync", "--solutions", solutions, "--exercises", exercises)[0] == 0

    write_notebook(with_cell_source(make_solution(), 2, CHECK_ADDS + "  # changed"), solutions / "tiny.ipynb")
    write_notebook(nbformat.v4.new_notebook(), exercises / "orphan.ipynb")
    problems = check_sync(solutions, exercises)
    assert problems[0] == f"stale:   {exercises / 'tiny.ipynb'}"
    assert problems[1].startswith(f"extra:   {exercises / 'orphan.ipynb'}")
    status, _, err = run_cli("check-sync", "--solutions", solutions, "--exercises", exercises)
    assert status == 1 and "orphan.ipynb" in err and "tiny.ipynb" in err


# --- execution in place ---------------------------------------------------------


def test_execute_writes_outputs_from_the_notebook_folder(tmp_path: Path) -> None:
    path = tmp_path / "chapter" / "nb.ipynb"
    path.parent.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import os\nprint(os.path.basename(os.getcwd()), 6 * 7)")]
    write_notebook(nb, path)
    assert run_cli("execute", path)[0] == 0
    outputs = read_notebook(path).cells[0].outputs
    assert [o.get("text") for o in outputs] == ["chapter 42\n"]


def test_execute_refuses_a_failing_notebook(tmp_path: Path) -> None:
    path = tmp_path / "nb.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("text"), nbformat.v4.new_code_cell("x = 1 / 0")]
    write_notebook(nb, path)
    before = path.read_bytes()
    status, _, err = run_cli("execute", path)
    assert status == 1 and "cell 1 ('x = 1 / 0') failed" in err and "ZeroDivisionError" in err
    assert path.read_bytes() == before


# --- grading ----------------------------------------------------------------------

GRADED_SETUP = 'import sys\n\nif "google.colab" in sys.modules:\n    pass\n\nimport numpy as np\nimport torch'
GRADED_CHECKS = {
    "adds": 'assert clip_add(1, 2, 10) == 3, "clip_add(1, 2, 10) should be 3"\n'
            "### BEGIN HIDDEN CHECKS\n"
            'assert clip_add(-1, -2, 10) == -3, "clip_add must add negative numbers too"\n'
            "### END HIDDEN CHECKS",
    "clips": 'assert np.allclose(clip_add(8, 5, 10), 10), "clip_add(8, 5, 10) should be clipped to 10"',
    "clips below": "torch.testing.assert_close(torch.tensor(float(clip_add(-8, -5, 10))), torch.tensor(-10.0))",
    "in range": 'assert abs(clip_add(20, 20, 10)) <= 10, "the result must stay within the limit"',
}
NO_CLIP = "def clip_add(a, b, limit):\n    return a + b  # forgets to clip"
ABS_ADD = "def clip_add(a, b, limit):\n    return min(abs(a) + abs(b), limit)  # adds magnitudes"
# What a student might put in a cell above the checks to pass them without the answer.
ATTACKS = {
    "patch-numpy": ("np.allclose = lambda *args, **kwargs: True", "clips"),
    "patch-torch": ("torch.testing.assert_close = lambda *args, **kwargs: None", "clips below"),
    "rebind-np": ("class Fake:\n    allclose = staticmethod(lambda *args, **kwargs: True)\nnp = Fake()", "clips"),
    "shadow-abs": ("abs = lambda x: 0", "in range"),
    "patch-builtins": ("import builtins\nbuiltins.abs = lambda x: 0", "in range"),
    "swallow-errors": ("get_ipython().set_custom_exc((AssertionError,), lambda *args, **kwargs: None)", "clips"),
    "blank-cells": ('get_ipython().input_transformers_cleanup.append(lambda lines: ["pass\\n"])', "clips"),
}


def make_graded_solution() -> NotebookNode:
    """The reference: setup, the function, and four checks (one with a hidden part)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Tiny exercise"),
        nbformat.v4.new_code_cell(GRADED_SETUP),
        nbformat.v4.new_code_cell(SOLUTION_SOURCE),
        *[nbformat.v4.new_code_cell(f"# CHECK: {check_id}\n{body}") for check_id, body in GRADED_CHECKS.items()],
    ]
    return nb


def with_cell_inserted(nb: NotebookNode, index: int, source: str) -> NotebookNode:
    nb = nbformat.from_dict(nb)
    nb.cells.insert(index, nbformat.v4.new_code_cell(source))
    return nb


def make_submissions(root: Path) -> dict[str, bytes]:
    """Write one submission per case; return the bytes of each file, to prove none changes."""
    solution = make_graded_solution()
    blank = generate_exercise(solution)
    no_clip = with_cell_source(blank, 2, NO_CLIP)
    deleted = nbformat.from_dict(solution)
    del deleted.cells[6]
    stubbed = nbformat.from_dict(blank)
    for check in find_checks(stubbed):
        stubbed.cells[check.cell_index].source = f"# CHECK: {check.check_id}\npass"
    weakened = with_cell_source(no_clip, 4, "# CHECK: clips\nassert True")
    escape = (
        "import os, pathlib\n"
        "pathlib.Path(os.path.expanduser('~/mtl-course-grading-test.txt')).write_text('x')\n"
        "pathlib.Path('../escape.txt').write_text('x')\n"
        "pathlib.Path('tiny.ipynb').write_text('overwritten')"
    )
    cases = {
        "alice/tiny.ipynb": solution,
        "bob/tiny.ipynb": blank,
        "carol/tiny.ipynb": no_clip,
        "dan/tiny.ipynb": deleted,
        "erin/tiny.ipynb": with_cell_inserted(solution, 3, "import os\nos._exit(1)"),
        "gina/tiny.ipynb": with_cell_source(blank, 2, ABS_ADD),
        "hank/tiny.ipynb": with_cell_inserted(solution, 3, "x = torch.empty(50 * 2**30, dtype=torch.uint8)"),
        "ivan/tiny.ipynb": with_cell_inserted(solution, 3, escape),
        "stub/tiny.ipynb": stubbed,
        "weakened/tiny.ipynb": weakened,
        "alice/.ipynb_checkpoints/tiny-checkpoint.ipynb": blank,  # skipped: hidden folder
        **{f"{name}/tiny.ipynb": with_cell_inserted(no_clip, 3, code) for name, (code, _) in ATTACKS.items()},
    }
    for name, nb in cases.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_notebook(nb, root / name)
    (root / "frank").mkdir()
    (root / "frank" / "tiny.ipynb").write_text("this is not a notebook")
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*.ipynb")}


def read_rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {row["submission"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run ``grade --jobs 2`` once over all the fixture submissions."""
    root = tmp_path_factory.mktemp("submissions")
    solutions = tmp_path_factory.mktemp("solutions")
    write_notebook(make_graded_solution(), solutions / "tiny.ipynb")
    files = make_submissions(root)
    out = root.parent / "grades.csv"
    status, stdout, stderr = run_cli("grade", root, "--solutions", solutions, "--out", out, "--jobs", 2)
    return {
        "root": root, "solutions": solutions, "files": files, "status": status, "stdout": stdout,
        "stderr": stderr, "rows": read_rows(out), "feedback": root.parent / "grades-feedback",
    }


@pytest.mark.parametrize(
    "submission, statuses, passed",
    [
        ("alice/tiny.ipynb", "pass pass pass pass", "4"),
        ("bob/tiny.ipynb", "fail fail fail fail", "0"),
        ("carol/tiny.ipynb", "pass fail fail fail", "1"),
        ("dan/tiny.ipynb", "pass pass pass pass", "4"),  # the deleted check is put back and run
        ("erin/tiny.ipynb", "fail fail fail fail", "0"),
        ("gina/tiny.ipynb", "fail pass fail pass", "2"),  # only the hidden check catches the adds
        ("hank/tiny.ipynb", "pass pass pass pass", "4"),
        ("ivan/tiny.ipynb", "pass pass pass pass", "4"),
        ("stub/tiny.ipynb", "fail fail fail fail", "0"),
        ("weakened/tiny.ipynb", "pass fail fail fail", "1"),
    ],
)
def test_gradebook_records_each_check(graded: dict, submission: str, statuses: str, passed: str) -> None:
    row = graded["rows"][submission]
    assert row["notebook"] == "tiny.ipynb" and row["total"] == "4"
    assert ([row[check_id] for check_id in GRADED_CHECKS], row["passed"]) == (statuses.split(), passed)


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_redefining_what_a_check_calls_does_not_pass_it(graded: dict, attack: str) -> None:
    row = graded["rows"][f"{attack}/tiny.ipynb"]
    assert row[ATTACKS[attack][1]] == "fail", f"the {attack!r} attack passed check {ATTACKS[attack][1]!r}"
    assert row["passed"] in ("0", "1"), "only 'adds' may pass: the answer does not clip"


def test_edited_deleted_and_suspicious_cells_are_recorded(graded: dict) -> None:
    rows = graded["rows"]
    assert rows["stub/tiny.ipynb"]["tampered"] == "adds edited; clips edited; clips below edited; in range edited"
    assert rows["weakened/tiny.ipynb"]["tampered"] == "clips edited"
    assert rows["dan/tiny.ipynb"]["tampered"] == "in range deleted"
    assert rows["swallow-errors/tiny.ipynb"]["tampered"] == "code mentions set_custom_exc"
    assert rows["blank-cells/tiny.ipynb"]["tampered"] == "code mentions input_transformers"
    assert all(rows[f"{s}/tiny.ipynb"]["tampered"] == "" for s in ("alice", "bob", "carol", "gina", "hank"))


def test_gradebook_columns_and_skipped_files(graded: dict) -> None:
    assert graded["status"] == 0
    assert list(next(iter(graded["rows"].values()))) == [
        "submission", "notebook", *GRADED_CHECKS, "passed", "total", "tampered", "error"
    ]
    assert "alice/.ipynb_checkpoints/tiny-checkpoint.ipynb" not in graded["rows"]
    assert len(graded["rows"]) == 11 + len(ATTACKS)


def test_kernel_death_is_a_failure_with_a_reason(graded: dict) -> None:
    assert "kernel died in cell 3" in graded["rows"]["erin/tiny.ipynb"]["error"]


def test_a_memory_hog_is_stopped_and_marked(graded: dict) -> None:
    assert graded["rows"]["hank/tiny.ipynb"]["error"] == "cell 3 ran out of memory (limit 4 GB)"


def test_a_submission_cannot_write_home_or_its_own_file(graded: dict) -> None:
    assert not (Path.home() / "mtl-course-grading-test.txt").exists()
    assert not (graded["root"] / "ivan" / "escape.txt").exists() and not (graded["root"] / "escape.txt").exists()
    assert graded["rows"]["ivan/tiny.ipynb"]["error"] == ""


def test_invalid_notebook_is_reported_not_fatal(graded: dict) -> None:
    row = graded["rows"]["frank/tiny.ipynb"]
    assert "not a valid Jupyter notebook" in row["error"]
    assert (row["adds"], row["clips"], row["passed"], row["total"]) == ("", "", "0", "4")
    assert "frank/tiny.ipynb: not a valid Jupyter notebook" in graded["stderr"]


def test_grading_never_modifies_submissions(graded: dict) -> None:
    root = graded["root"]
    assert {name: (root / name).read_bytes() for name in graded["files"]} == graded["files"]


def test_summary_table_is_printed(graded: dict) -> None:
    lines = graded["stdout"].splitlines()
    assert any(line.split()[:2] == ["carol/tiny.ipynb", "1/4"] for line in lines if line.strip())
    assert any(line.split() == ["clips", f"5/{11 + len(ATTACKS)}"] for line in lines), graded["stdout"]


def test_feedback_says_what_failed_and_where(graded: dict) -> None:
    carol = (graded["feedback"] / "carol" / "tiny.md").read_text()
    assert "**1 of 4 checks pass.**" in carol
    assert "AssertionError: clip_add(8, 5, 10) should be clipped to 10" in carol
    assert "assert np.allclose(clip_add(8, 5, 10), 10)" in carol, "the failing line of the check"
    gina = (graded["feedback"] / "gina" / "tiny.md").read_text()
    assert "A hidden check failed" in gina and "clip_add must add negative numbers too" in gina
    assert "clip_add(-1, -2, 10)" not in gina, "the report must not show the hidden check's source"
    dan = (graded["feedback"] / "dan" / "tiny.md").read_text()
    assert "was deleted in your notebook" in dan
    assert "could not be graded: not a valid Jupyter notebook" in (graded["feedback"] / "frank" / "tiny.md").read_text()


def test_feedback_is_never_written_into_a_folder_of_other_files(graded: dict, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    status, _, err = run_cli(
        "grade", graded["root"] / "alice", "--solutions", graded["solutions"],
        "--out", tmp_path / "grades.csv", "--feedback", tmp_path,
    )
    assert status == 1 and "refusing to write feedback" in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_the_gradebook_never_replaces_another_file(graded: dict, tmp_path: Path) -> None:
    (tmp_path / "marks.csv").write_text("name,mark\nalice,17\n")
    status, _, err = run_cli("grade", graded["root"] / "alice", "--solutions", graded["solutions"],
                             "--out", tmp_path / "marks.csv")
    assert status == 1 and "refusing to overwrite" in err and "not a gradebook" in err
    assert (tmp_path / "marks.csv").read_text() == "name,mark\nalice,17\n"
    assert not (tmp_path / "marks-feedback").exists(), "nothing is graded or written after a refusal"


def test_parallel_grading_gives_the_same_gradebook(graded: dict, tmp_path: Path) -> None:
    subset = tmp_path / "subset"
    for student in ("alice", "carol", "gina", "patch-numpy"):
        (subset / student).mkdir(parents=True)
        (subset / student / "tiny.ipynb").write_bytes(graded["files"][f"{student}/tiny.ipynb"])
    status, _, _ = run_cli("grade", subset, "--solutions", graded["solutions"], "--out", tmp_path / "one.csv")
    assert status == 0
    one = read_rows(tmp_path / "one.csv")
    assert one == {path: graded["rows"][path] for path in one}, "--jobs 1 and --jobs 2 must agree"


def test_a_submission_without_a_reference_is_not_graded(graded: dict, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "other.ipynb").write_bytes(graded["files"]["alice/tiny.ipynb"])
    status, _, err = run_cli("grade", tmp_path / "sub", "--solutions", graded["solutions"], "--out", tmp_path / "g.csv")
    assert status == 0 and "no reference solution" in read_rows(tmp_path / "g.csv")["other.ipynb"]["error"]


def test_time_limit_stops_a_submission(tmp_path: Path) -> None:
    nb = with_cell_inserted(make_graded_solution(), 3, "import time\ntime.sleep(60)")
    for folder in ("subs", "solutions"):
        (tmp_path / folder).mkdir()
    write_notebook(nb, tmp_path / "subs" / "tiny.ipynb")
    write_notebook(make_graded_solution(), tmp_path / "solutions" / "tiny.ipynb")
    submission = grade_submission(tmp_path / "subs", tmp_path / "subs" / "tiny.ipynb", tmp_path / "solutions",
                                  Limits(time_limit=8))
    assert submission.passed == 0 and "ran past its time limit of 8 s in cell 3" in submission.error


def test_timed_out_cell_fails_later_checks(tmp_path: Path) -> None:
    nb = make_solution()
    nb.cells.insert(2, nbformat.v4.new_code_cell("import time\ntime.sleep(60)"))
    write_notebook(nb, tmp_path / "slow.ipynb")
    results = grade_notebook(tmp_path / "slow.ipynb", timeout=2)
    assert {check_id: result.passed for check_id, result in results.items()} == {"adds": False, "clips": False}


def grade_slow_submission(tmp_path: Path, limits: Limits):
    """Grade the tiny exercise with a ten-minute sleep inserted before its checks."""
    nb = with_cell_inserted(make_graded_solution(), 3, "import time\ntime.sleep(600)")
    for folder in ("subs", "solutions"):
        (tmp_path / folder).mkdir()
    write_notebook(nb, tmp_path / "subs" / "tiny.ipynb")
    write_notebook(make_graded_solution(), tmp_path / "solutions" / "tiny.ipynb")
    started = time.monotonic()
    submission = grade_submission(tmp_path / "subs", tmp_path / "subs" / "tiny.ipynb", tmp_path / "solutions", limits)
    return submission, time.monotonic() - started


def test_a_kernel_that_ignores_its_timeout_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If nbclient's own timeout never fires, the grader kills the kernel shortly past the cell's limit."""
    monkeypatch.setattr(NotebookClient, "_get_timeout", lambda self, cell: None)  # wait forever
    submission, seconds = grade_slow_submission(tmp_path, Limits(cell_timeout=3, kill_grace=2))
    assert "cell 3 stopped responding; the grader killed its kernel" in submission.error
    assert submission.passed == 0 and seconds < 120


def test_a_run_that_never_returns_is_given_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even a client that hangs after its kernel is killed does not hang the grader."""
    monkeypatch.setattr(NotebookClient, "execute", lambda self, **kwargs: threading.Event().wait())
    submission, seconds = grade_slow_submission(tmp_path, Limits(cell_timeout=2, kill_grace=2))
    assert "the kernel's start stopped responding" in submission.error
    assert submission.passed == 0 and seconds < 30


def test_nbval_lax_agrees_with_the_grader(graded: dict) -> None:
    """`pytest --nbval-lax` on the student's own checks fails exactly the check cells the grader fails."""
    path = graded["root"] / "carol" / "tiny.ipynb"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-rA", path.name],
        cwd=path.parent, capture_output=True, text=True, timeout=300,
    )
    nb = read_notebook(path)
    code_cells = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    for check in find_checks(nb):
        item = f"{path.name}::Cell {code_cells.index(check.cell_index)}"
        verdict = "PASSED" if graded["rows"]["carol/tiny.ipynb"][check.check_id] == "pass" else "FAILED"
        assert f"{verdict} {item}" in result.stdout, result.stdout


def test_the_failing_line_is_the_whole_statement() -> None:
    from mtl_course.grading.sandbox import _statement_at

    source = 'x = 1\nfor i in range(2):\n    assert i < 1, (\n        f"i = {i}")\ny = 2'
    assert _statement_at(source, 3) == 'assert i < 1, (\n    f"i = {i}")'
    assert _statement_at(source, 1) == "x = 1"
    assert _statement_at("not python (", 1) == "not python ("
