"""Reading, writing and inspecting notebooks: the pieces every grading command shares."""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import NamedTuple

import nbformat
from nbformat import NotebookNode

CHECK_MARKER = re.compile(r"^#\s*CHECK:\s*(?P<check_id>.*?)\s*$")


class GradingError(Exception):
    """Base class of the errors the grading commands report to the user."""


class InvalidNotebookError(GradingError):
    """A file that should be a Jupyter notebook cannot be read as one."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.reason = f"not a valid Jupyter notebook ({reason})"
        super().__init__(f"{path}: {self.reason}")


class Check(NamedTuple):
    """A check cell: its id (from ``# CHECK: <id>``) and its index in ``nb.cells``."""

    check_id: str
    cell_index: int


def read_notebook(path: str | os.PathLike) -> NotebookNode:
    """Read a notebook (as nbformat 4) or raise :class:`InvalidNotebookError` saying why not."""
    try:
        nb = nbformat.read(str(path), as_version=4)
        nbformat.validate(nb)
    except Exception as error:  # nbformat raises many types on malformed input
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InvalidNotebookError(path, reason) from error
    return nb


def notebook_text(nb: NotebookNode) -> str:
    """The exact text a notebook is saved as (the format Jupyter itself writes)."""
    return nbformat.writes(nb) + "\n"


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` to ``path`` atomically: readers see the old file or the new one, never half."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            tmp.write(text)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_notebook(nb: NotebookNode, path: str | os.PathLike) -> None:
    """Save a notebook atomically, in the format Jupyter writes."""
    write_text_atomic(notebook_text(nb), path)


def check_id_of(cell: NotebookNode) -> str | None:
    """The check id of a code cell whose first non-blank line is ``# CHECK: <id>``, else None."""
    if cell.cell_type != "code":
        return None
    lines = [line for line in cell.source.splitlines() if line.strip()]
    match = CHECK_MARKER.match(lines[0].strip()) if lines else None
    return match["check_id"] if match else None


def find_checks(nb: NotebookNode) -> list[Check]:
    """The check cells of a notebook, in order.

    A check id may appear more than once (a student may duplicate a check cell);
    :func:`mtl_course.grading.grade_notebook` then requires every copy to pass.
    """
    checks = []
    for index, cell in enumerate(nb.cells):
        check_id = check_id_of(cell)
        if check_id == "":
            raise GradingError(f"cell {index} has a '# CHECK:' line without an id")
        if check_id is not None:
            checks.append(Check(check_id, index))
    return checks


def clear_outputs(nb: NotebookNode) -> None:
    """Remove every output and execution count, in place."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
