"""Running notebooks with nbclient: in place for the reference outputs, in a sandbox for grading."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable

from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbformat import NotebookNode

from .notebooks import GradingError, read_notebook, write_notebook

KERNEL_NAME = "python3"
DEFAULT_TIMEOUT = 600  # seconds per cell
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
# Reproducible runs unless the caller says otherwise: no progress-bar widgets in the
# stored outputs, and the CPU-sized profile that strict nbval is run with.
KERNEL_ENV_DEFAULTS = {"TQDM_DISABLE": "1", "MTL_COURSE_PROFILE": "quick"}


class ExecutionFailedError(GradingError):
    """A notebook did not run from top to bottom without an error."""


def make_client(
    nb: NotebookNode,
    cwd: str | os.PathLike,
    timeout: int = DEFAULT_TIMEOUT,
    allow_errors: bool = False,
    **hooks: Callable[..., Any],
) -> NotebookClient:
    """An nbclient client running ``nb`` on the ``python3`` kernel with working directory ``cwd``.

    ``timeout`` is per cell; a cell that exceeds it raises ``CellTimeoutError`` and
    stops the run. No timing metadata is recorded, so re-executing an unchanged
    notebook leaves its file unchanged apart from the outputs that really differ.
    ``hooks`` are nbclient's ``on_cell_start``, ``on_cell_executed``, ... callbacks.
    """
    return NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=KERNEL_NAME,
        allow_errors=allow_errors,
        record_timing=False,
        resources={"metadata": {"path": str(cwd)}},
        **hooks,
    )


def kernel_env() -> dict[str, str]:
    """The kernel's environment: this process's, plus :data:`KERNEL_ENV_DEFAULTS` where unset."""
    return {**KERNEL_ENV_DEFAULTS, **os.environ}


def _first_line(cell: NotebookNode) -> str:
    return next((line for line in cell.source.splitlines() if line.strip()), "")


def execute_in_place(path: str | os.PathLike, timeout: int = DEFAULT_TIMEOUT) -> None:
    """Re-execute the notebook at ``path`` in its own folder and save it with the new outputs.

    If a cell raises, times out or kills the kernel, the file is left untouched and
    :class:`ExecutionFailedError` names the failing cell.
    """
    path = Path(path)
    nb = read_notebook(path)
    started: list[int] = []
    client = make_client(
        nb, path.parent, timeout, on_cell_start=lambda cell, cell_index: started.append(cell_index)
    )
    try:
        client.execute(env=kernel_env())
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as error:
        cell = f"cell {started[-1]} ({_first_line(nb.cells[started[-1]])!r})"
        message = ANSI_ESCAPE.sub("", str(error))
        raise ExecutionFailedError(f"{path}: {cell} failed; the file was not changed.\n{message}") from None
    write_notebook(nb, path)
