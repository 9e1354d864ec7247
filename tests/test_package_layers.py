"""The package's dependency order, as ``mtl_course.LAYERS`` and the documentation state it, holds in the code."""
from __future__ import annotations

import ast
from pathlib import Path

import mtl_course

PACKAGE = Path(mtl_course.__file__).parent
ROOT = PACKAGE.parent


def top_module(path: Path) -> str:
    """The package module (file or sub-package) a source file belongs to, e.g. ``multitask`` or ``meta``."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported_modules(path: Path) -> set[str]:
    """The package modules one source file imports (relative or absolute imports of ``mtl_course``)."""
    inside = path.relative_to(PACKAGE).parts[:-1]  # the sub-package folders of the file
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = list(inside[: len(inside) - node.level + 1])
            names = base + node.module.split(".") if node.module else None
            found |= {names[0]} if names else {(base + [a.name])[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mtl_course"):
            rest = node.module.split(".")[1:]
            found |= {rest[0]} if rest else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("mtl_course.")}
    return found


def test_every_module_has_a_place_in_the_layers():
    modules = {top_module(p) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE}
    placed = [m for group in mtl_course.LAYERS for m in group] + list(mtl_course.EDGE)
    assert len(placed) == len(set(placed)), "a module is listed twice"
    assert modules == set(placed), f"not placed: {sorted(modules - set(placed))}, gone: {sorted(set(placed) - modules)}"


def test_the_core_imports_only_from_earlier_layers():
    level = {m: i for i, group in enumerate(mtl_course.LAYERS) for m in group}
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent == PACKAGE and path.name == "__init__.py":
            continue
        me = top_module(path)
        for other in imported_modules(path) - {me}:
            if me in level and (other not in level or level[other] >= level[me]):
                wrong.append(f"{path.relative_to(ROOT)} ({me}) imports {other}")
    assert not wrong, "imports against the dependency order of mtl_course.LAYERS:\n" + "\n".join(wrong)


def test_the_documentation_states_the_layers():
    chain = " → ".join(", ".join(group) for group in mtl_course.LAYERS)
    assert chain in (ROOT / "CONTRIBUTING.md").read_text(), f"CONTRIBUTING.md should state `{chain}`"
    docstring_chain = " -> ".join(", ".join(group) for group in mtl_course.LAYERS)
    assert docstring_chain in " ".join(mtl_course.__doc__.split()), "the package docstring should state the order"
