"""The notebook the grader runs: the student's cells with the instructor's checks in place.

Every check cell of a submission is replaced by the reference version of that check
(from the solution notebook of the same name, hidden checks included); a check cell
the student deleted is put back; what was edited or deleted is recorded. A cell at
the top installs :mod:`mtl_course.grading.sandbox`, which runs each check on the
student's variables but with pristine imports and builtins.
"""
from __future__ import annotations

import ast
import json
import re
import secrets
from dataclasses import dataclass, field

import nbformat
from nbformat import NotebookNode

from .generate import has_solution, split_hidden_checks, strip_hidden_checks
from .notebooks import check_id_of, find_checks

# Code that reaches into the grading machinery rather than solving the exercise: a
# submission that mentions any of it is flagged for the instructor to read.
SUSPICIOUS = re.compile(
    r"mtl_course\.grading|__mtl_course_grader__|sys\.modules|set_custom_exc|CustomTB|custom_exceptions"
    r"|input_transformers|ast_transformers|events\.register|sys\.settrace|sys\.setprofile"
)
SETUP_SOURCE = "import mtl_course.grading.sandbox as __mtl_course_grader__\n__mtl_course_grader__.install({})"


@dataclass
class GradedNotebook:
    """What the grader runs for one submission, and what it found while building it.

    ``cells[i]`` of ``nb`` that run check ``check_id`` are listed in ``check_cells``;
    ``tampered`` maps a check id to ``"edited"`` or ``"deleted"``; ``suspicious``
    lists the grading machinery the student's code mentions; ``token`` is the random
    string a passed check prints.
    """

    nb: NotebookNode
    check_cells: dict[str, list[int]] = field(default_factory=dict)
    tampered: dict[str, str] = field(default_factory=dict)
    suspicious: list[str] = field(default_factory=list)
    unknown_checks: list[str] = field(default_factory=list)
    token: str = ""
    origin: list[int | None] = field(default_factory=list)

    def describe_cell(self, index: int) -> str:
        """Cell ``index`` of ``nb`` as the student knows it: ``cell 7`` of their notebook."""
        source = self.origin[index] if index < len(self.origin) else None
        if source is not None:
            return f"cell {source}"
        check_id = check_id_of(self.nb.cells[index])
        return f"the restored check cell {check_id}" if check_id else "the grader's setup cell"


def _normalise(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def _python(source: str) -> str:
    """Cell source as plain Python: IPython's magics (``%pip``) become function calls."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def _defined_names(tree: ast.AST) -> set[str]:
    """Names a cell binds at its top level (functions, classes, assignments, imports)."""
    names: set[str] = set()
    for node in getattr(tree, "body", []):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        targets = list(getattr(node, "targets", []))
        if getattr(node, "target", None) is not None:
            targets.append(node.target)
        for target in targets:
            names.update(name.id for name in ast.walk(target) if isinstance(name, ast.Name))
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def reference_imports(solution: NotebookNode) -> str:
    """The top-level imports of the solution's setup code, as Python source.

    These are the names a check may take from a fresh import. Cells with a solution
    block are left out, and so is any name such a cell defines: what the student
    writes must come from the student's own namespace.
    """
    imports: list[ast.stmt] = []
    student_names: set[str] = set()
    for cell in solution.cells:
        if cell.cell_type != "code" or check_id_of(cell) is not None:
            continue
        try:
            tree = ast.parse(_python(cell.source))
        except SyntaxError:
            continue
        if has_solution(cell.source):
            student_names |= _defined_names(tree)
        else:
            imports += [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    kept = []
    for node in imports:
        aliases = [a for a in node.names if (a.asname or a.name).split(".")[0] not in student_names]
        if aliases and not any(a.name == "*" for a in aliases):
            node.names = aliases
            kept.append(ast.unparse(node))
    return "\n".join(dict.fromkeys(kept))


def reference_checks(solution: NotebookNode) -> dict[str, str]:
    """Each check id of the solution and its full source (hidden checks included), in order."""
    return {check.check_id: solution.cells[check.cell_index].source for check in find_checks(solution)}


def _runner_source(check_id: str, token: str, source: str) -> str:
    visible, hidden = split_hidden_checks(source)
    args = ", ".join(json.dumps(value, ensure_ascii=False) for value in (check_id, token, visible, hidden))
    return f"# CHECK: {check_id}\n__mtl_course_grader__.run_check({args})"


def _suspicious(submission: NotebookNode, solution: NotebookNode, check_indices: set[int]) -> list[str]:
    """The grading machinery that the student's own lines mention (lines of the solution do not count)."""
    given = {line.strip() for cell in solution.cells for line in cell.source.splitlines()}
    found: dict[str, None] = {}
    for index, cell in enumerate(submission.cells):
        if cell.cell_type != "code" or index in check_indices:
            continue
        for line in cell.source.splitlines():
            if line.strip() not in given:
                found.update(dict.fromkeys(match[0] for match in SUSPICIOUS.finditer(line)))
    return list(found)


def build_graded_notebook(submission: NotebookNode, solution: NotebookNode) -> GradedNotebook:
    """The student's notebook with every check cell replaced by (or restored to) the reference check."""
    checks = reference_checks(solution)
    token = secrets.token_hex(16)
    graded = GradedNotebook(nbformat.from_dict(submission), token=token)
    submitted = find_checks(submission)
    graded.suspicious = _suspicious(submission, solution, {check.cell_index for check in submitted})
    present = {check.check_id for check in submitted}
    for check in submitted:
        cell = graded.nb.cells[check.cell_index]
        if check.check_id not in checks:
            graded.unknown_checks.append(check.check_id)
            continue
        reference = checks[check.check_id]
        if _normalise(cell.source) not in (_normalise(strip_hidden_checks(reference)), _normalise(reference)):
            graded.tampered[check.check_id] = "edited"
        cell.source = _runner_source(check.check_id, token, checks[check.check_id])
    cells = list(graded.nb.cells)
    origin: list[int | None] = list(range(len(cells)))
    order = list(checks)
    for position, check_id in enumerate(order):
        if check_id in present:
            continue
        graded.tampered[check_id] = "deleted"
        later = [cid for cid in order[position + 1:] if cid in present]
        restored = nbformat.v4.new_code_cell(_runner_source(check_id, token, checks[check_id]))
        at = next((i for i, c in enumerate(cells) if later and check_id_of(c) == later[0]), len(cells))
        cells.insert(at, restored)
        origin.insert(at, None)
    setup = nbformat.v4.new_code_cell(SETUP_SOURCE.format(json.dumps(reference_imports(solution))))
    graded.nb.cells = [setup, *cells]
    graded.origin = [None, *origin]
    for index, cell in enumerate(graded.nb.cells):
        check_id = check_id_of(cell)
        if check_id in checks:
            graded.check_cells.setdefault(check_id, []).append(index)
    graded.tampered = {check_id: graded.tampered[check_id] for check_id in order if check_id in graded.tampered}
    return graded
