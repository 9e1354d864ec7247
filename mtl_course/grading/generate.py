"""Exercise notebooks generated from solution notebooks, and the check that they are in sync."""
from __future__ import annotations

import copy
import hashlib
import json
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from .notebooks import (
    GradingError,
    InvalidNotebookError,
    check_id_of,
    find_checks,
    notebook_text,
    read_notebook,
    write_text_atomic,
)

BEGIN_SOLUTION = re.compile(r"^(?P<indent>[ \t]*)### BEGIN SOLUTION(?::\s*(?P<hint>.*?))?\s*$")
END_SOLUTION = re.compile(r"^[ \t]*### END SOLUTION\s*$")
BEGIN_HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN CHECKS\s*$")
END_HIDDEN = re.compile(r"^[ \t]*### END HIDDEN CHECKS\s*$")
MAX_LINE = 88  # the longest code line of a notebook (tests/test_notebook_conventions.py)
DEF_LINE = re.compile(r"^(?P<indent>[ \t]*)(?:async[ \t]+)?def[ \t]+(?P<name>\w+)")
METADATA_KEY = "mtl_course"
GENERATED_NOTE = (
    "Generated from the solution notebook by `python -m mtl_course.grading generate`: "
    "edit the solution, not this file."
)
# Notebook-level metadata an exercise inherits (Colab reads "accelerator" to offer a GPU).
KEPT_NOTEBOOK_METADATA = ("kernelspec", "language_info", "colab", "accelerator")


class SolutionMarkerError(GradingError):
    """``### BEGIN SOLUTION`` / ``### END SOLUTION`` lines that do not pair up."""


class OverwriteRefusedError(GradingError):
    """Generating would overwrite exercise files that someone has edited."""


@dataclass(frozen=True)
class Written:
    """What :func:`generate_exercises` did with one exercise file."""

    path: Path
    changed: bool


def _enclosing_function(lines: list[str], index: int, indent: str) -> str | None:
    """Name of the innermost ``def`` above ``lines[index]`` that encloses code at ``indent``."""
    for line in reversed(lines[:index]):
        match = DEF_LINE.match(line)
        if match and len(match["indent"]) < len(indent):
            return match["name"]
    return None


def _placeholder(indent: str, hint: str | None, function: str | None) -> list[str]:
    """The TODO comment and ``raise NotImplementedError`` that replace a solution block."""
    where = f"`{function}`" if function else "this cell"
    message = f"Exercise: complete the TODO in {where}" + (f" ({hint})" if hint else "") + "."
    todo = hint or "write your code here, replacing the `raise` line below."
    comment = textwrap.wrap(f"TODO: {todo}", MAX_LINE - len(indent) - 2, break_long_words=False)
    text = json.dumps(message, ensure_ascii=False)
    raise_line = f"{indent}raise NotImplementedError({text})"
    if len(raise_line) > MAX_LINE:  # the message on a line of its own
        raise_line = f"{indent}raise NotImplementedError(\n{indent}    {text}\n{indent})"
    return [f"{indent}# {line}" for line in comment] + raise_line.split("\n")


def has_solution(source: str) -> bool:
    """True if ``source`` holds a ``### BEGIN SOLUTION`` or ``### END SOLUTION`` line."""
    return any(BEGIN_SOLUTION.match(line) or END_SOLUTION.match(line) for line in source.splitlines())


def strip_solutions(source: str) -> str:
    """Replace each ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` block of ``source``.

    Each block becomes, at the indentation of its ``BEGIN`` line, a ``# TODO`` comment
    and a ``raise NotImplementedError`` naming the function to complete.  The text
    after ``### BEGIN SOLUTION:`` (if any) is shown to the student as the hint.
    """
    lines = source.splitlines(keepends=True)
    result: list[str] = []
    inside = False
    for index, line in enumerate(lines):
        if match := BEGIN_SOLUTION.match(line):
            if inside:
                raise SolutionMarkerError(f"line {index + 1}: nested '### BEGIN SOLUTION'")
            inside = True
            function = _enclosing_function(lines, index, match["indent"])
            result += [text + "\n" for text in _placeholder(match["indent"], match["hint"], function)]
        elif END_SOLUTION.match(line):
            if not inside:
                raise SolutionMarkerError(f"line {index + 1}: '### END SOLUTION' without a BEGIN")
            inside = False
        elif not inside:
            result.append(line)
    if inside:
        raise SolutionMarkerError("'### BEGIN SOLUTION' without a matching '### END SOLUTION'")
    text = "".join(result)
    return text if source.endswith("\n") else text.removesuffix("\n")


def has_hidden_checks(source: str) -> bool:
    """True if ``source`` holds a ``### BEGIN HIDDEN CHECKS`` or ``### END HIDDEN CHECKS`` line."""
    return any(BEGIN_HIDDEN.match(line) or END_HIDDEN.match(line) for line in source.splitlines())


def _hidden_line_kinds(source: str) -> list[str]:
    """``"visible"``, ``"hidden"`` or ``"marker"`` for each line of a check cell's source.

    Raises :class:`SolutionMarkerError` on unpaired or indented markers: hidden checks
    sit at the top level of the cell, so that the visible part alone stays valid Python.
    """
    kinds: list[str] = []
    inside = False
    for index, line in enumerate(source.splitlines()):
        begin, end = BEGIN_HIDDEN.match(line), END_HIDDEN.match(line)
        if (begin or end) and line[:1] in (" ", "\t"):
            raise SolutionMarkerError(f"line {index + 1}: hidden-check markers must not be indented")
        if begin and inside:
            raise SolutionMarkerError(f"line {index + 1}: nested '### BEGIN HIDDEN CHECKS'")
        if end and not inside:
            raise SolutionMarkerError(f"line {index + 1}: '### END HIDDEN CHECKS' without a BEGIN")
        if begin or end:
            inside = bool(begin)
            kinds.append("marker")
        else:
            kinds.append("hidden" if inside else "visible")
    if inside:
        raise SolutionMarkerError("'### BEGIN HIDDEN CHECKS' without a matching '### END HIDDEN CHECKS'")
    return kinds


def split_hidden_checks(source: str) -> tuple[str, str]:
    """A check cell's source as (visible part, hidden part).

    The hidden part is the lines between ``### BEGIN HIDDEN CHECKS`` and
    ``### END HIDDEN CHECKS`` (nbgrader's convention; several blocks are joined in
    order); the visible part is everything else. Both keep their line numbers: each
    line that goes to the other part becomes an empty line, so an error in either
    points at its line in the solution's cell.
    """
    lines, kinds = source.splitlines(), _hidden_line_kinds(source)
    visible = [line if kind == "visible" else "" for line, kind in zip(lines, kinds)]
    hidden = [line if kind == "hidden" else "" for line, kind in zip(lines, kinds)]
    return "\n".join(visible), "\n".join(hidden)


def strip_hidden_checks(source: str) -> str:
    """``source`` without its hidden-check blocks (marker lines included): what the student sees."""
    lines, kinds = source.splitlines(keepends=True), _hidden_line_kinds(source)
    text = "".join(line for line, kind in zip(lines, kinds) if kind == "visible").rstrip("\n")
    return text + "\n" if source.endswith("\n") else text


def content_hash(nb: NotebookNode) -> str:
    """Hash of what a student writes in a notebook: the type and source of every cell.

    Outputs and metadata are left out, so running an exercise does not count as editing it.
    """
    cells = [[cell.cell_type, cell.source] for cell in nb.cells]
    digest = hashlib.sha256(json.dumps(cells, ensure_ascii=False).encode("utf-8"))
    return "sha256:" + digest.hexdigest()


def _exercise_cell(cell: NotebookNode, index: int) -> NotebookNode:
    """One exercise cell: solution blocks replaced, outputs and timing metadata removed."""
    cell = copy.deepcopy(cell)
    cell.metadata.pop("execution", None)
    if cell.cell_type != "code":
        return cell
    if has_hidden_checks(cell.source):
        if check_id_of(cell) is None:
            raise SolutionMarkerError(f"cell {index} has hidden checks but is not a '# CHECK:' cell")
        try:
            cell.source = strip_hidden_checks(cell.source)
        except SolutionMarkerError as error:
            raise SolutionMarkerError(f"cell {index}, {error}") from None
    if has_solution(cell.source):
        if check_id_of(cell) is not None:
            raise SolutionMarkerError(f"cell {index} is a check cell: it cannot hold a solution")
        try:
            cell.source = strip_solutions(cell.source)
        except SolutionMarkerError as error:
            raise SolutionMarkerError(f"cell {index}, {error}") from None
    cell.outputs = []
    cell.execution_count = None
    return cell


def _check_ids_are_unique(nb: NotebookNode) -> None:
    """Each check id names one gradebook column, so a solution may use it only once."""
    seen: set[str] = set()
    for check in find_checks(nb):
        if check.check_id in seen:
            raise GradingError(f"cell {check.cell_index}: check id {check.check_id!r} is used twice")
        seen.add(check.check_id)


def _retarget_colab_links(markdown: str, old: str, new: str) -> str:
    """Point Colab links (the badge) at ``new`` instead of ``old``, e.g. ``solutions/x.ipynb``."""
    link = re.compile(rf"(colab\.research\.google\.com/[^\s)\"']*/){re.escape(old)}")
    return link.sub(lambda match: match[1] + new, markdown)


def generate_exercise(
    solution_nb: NotebookNode, colab_paths: tuple[str, str] | None = None
) -> NotebookNode:
    """The exercise notebook for a solution notebook.

    Solution blocks become TODOs (see :func:`strip_solutions`), outputs and execution
    counts are cleared, check cells are kept as they are, and the notebook metadata
    records :func:`content_hash` so that later runs can tell whether someone edited it.
    ``colab_paths=("solutions/x.ipynb", "exercises/x.ipynb")`` points the markdown's
    Colab links (the badge) at the exercise.
    """
    _check_ids_are_unique(solution_nb)
    exercise = nbformat.v4.new_notebook()
    exercise.nbformat_minor = solution_nb.nbformat_minor
    exercise.metadata = {
        key: copy.deepcopy(solution_nb.metadata[key])
        for key in KEPT_NOTEBOOK_METADATA
        if key in solution_nb.metadata
    }
    exercise.cells = [_exercise_cell(cell, i) for i, cell in enumerate(solution_nb.cells)]
    if colab_paths:
        for cell in exercise.cells:
            if cell.cell_type == "markdown":
                cell.source = _retarget_colab_links(cell.source, *colab_paths)
    exercise.metadata[METADATA_KEY] = {"note": GENERATED_NOTE, "content_hash": content_hash(exercise)}
    return exercise


def _expected_exercises(solutions_dir: Path, exercises_dir: Path) -> dict[Path, str]:
    """Map each exercise path to the text ``generate`` writes there."""
    if not solutions_dir.is_dir():
        raise GradingError(f"solutions folder not found: {solutions_dir}")
    expected = {}
    for solution_path in sorted(solutions_dir.glob("*.ipynb")):
        name = solution_path.name
        colab_paths = (f"{solutions_dir.name}/{name}", f"{exercises_dir.name}/{name}")
        try:
            exercise = generate_exercise(read_notebook(solution_path), colab_paths)
        except GradingError as error:
            raise GradingError(f"{solution_path}: {error}") from None
        expected[exercises_dir / solution_path.name] = notebook_text(exercise)
    return expected


def _holds(path: Path, text: str) -> bool:
    """True if the file at ``path`` exists and contains exactly ``text``."""
    return path.is_file() and path.read_bytes() == text.encode("utf-8")


def edit_reason(path: Path) -> str | None:
    """Why the exercise at ``path`` must not be overwritten silently, or None if it may be."""
    try:
        nb = read_notebook(path)
    except InvalidNotebookError:
        return "is not a readable notebook"
    recorded = nb.metadata.get(METADATA_KEY, {}).get("content_hash")
    if recorded is None:
        return "has no generator hash in its metadata (it was not written by `generate`)"
    if recorded != content_hash(nb):
        return "was edited since it was generated"
    return None


def generate_exercises(
    solutions_dir: str | Path = "solutions", exercises_dir: str | Path = "exercises", force: bool = False
) -> list[Written]:
    """Write ``exercises_dir/<name>.ipynb`` for every ``solutions_dir/<name>.ipynb``.

    Nothing is written if any existing exercise that would change has been edited
    (or was not generated), unless ``force``: :class:`OverwriteRefusedError` names them.
    """
    solutions_dir, exercises_dir = Path(solutions_dir), Path(exercises_dir)
    expected = _expected_exercises(solutions_dir, exercises_dir)
    changed = {path: text for path, text in expected.items() if not _holds(path, text)}
    if not force:
        refusals = [f"  {path} {reason}" for path in changed if path.exists() and (reason := edit_reason(path))]
        if refusals:
            raise OverwriteRefusedError(
                "refusing to overwrite exercises that may hold a student's work:\n"
                + "\n".join(refusals)
                + "\nMove them away, or run `generate --force` to overwrite them."
            )
    exercises_dir.mkdir(parents=True, exist_ok=True)
    for path, text in changed.items():
        write_text_atomic(text, path)
    return [Written(path, path in changed) for path in expected]


def check_sync(solutions_dir: str | Path = "solutions", exercises_dir: str | Path = "exercises") -> list[str]:
    """Differences between ``exercises_dir`` and what ``generate`` would write there.

    Returns one line per missing, stale or extra exercise file; empty when in sync.
    """
    solutions_dir, exercises_dir = Path(solutions_dir), Path(exercises_dir)
    expected = _expected_exercises(solutions_dir, exercises_dir)
    problems = []
    for path, text in expected.items():
        if not path.exists():
            problems.append(f"missing: {path}")
        elif not _holds(path, text):
            problems.append(f"stale:   {path}")
    extra = sorted(set(exercises_dir.glob("*.ipynb")) - set(expected))
    problems += [f"extra:   {path} (no {solutions_dir / path.name})" for path in extra]
    return problems
