"""The grader's side of a graded kernel: run the instructor's checks on a student's namespace.

The grader inserts one cell at the top of every graded notebook::

    import mtl_course.grading.sandbox as __mtl_course_grader__
    __mtl_course_grader__.install(IMPORTS)

and replaces each check cell by ``__mtl_course_grader__.run_check(ID, TOKEN, VISIBLE, HIDDEN)``.
``install`` runs before any of the student's code: it imports what the reference
notebook imports and keeps a copy of those modules' attributes, of ``builtins`` and
of IPython's input hooks. ``run_check`` puts all of them back, then runs the check
in a namespace of its own: the student's variables, overlaid with fresh imports of
the names the reference imports, on pristine builtins. So a check cannot be passed
by redefining or monkey-patching what it calls (``np.allclose = ...``,
``torch.testing.assert_close = ...``, ``abs = ...``). It prints ``TOKEN passed ID``
when every assert held; the grader counts a check as passed only when its cell ran
without an error and printed that line, so a check that was skipped by any means
(an input transformer that blanks cells, a custom exception handler) fails.

What this does not stop is code written against the grader itself (replacing this
module in ``sys.modules``, reading the token from the call stack); the grader flags
submissions whose code mentions such machinery for the instructor to read (the
``tampered`` column), and full isolation needs checks that run in a process the
student's code cannot reach.
"""
from __future__ import annotations

import ast
import json
import textwrap
import sys
import traceback
import types
import warnings
from typing import Any

# Modules whose attributes are restored before each check: everything the checks'
# names come from. Submodules loaded later are left alone.
TRUSTED_PREFIXES = ("numpy", "torch", "scipy", "math", "mtl_course", "builtins", "random", "statistics")
# Python-level classes the checks use through methods (``tensor.allclose``, ``model.parameters``).
TRUSTED_CLASSES = ("torch.Tensor", "torch.nn.Module", "torch.nn.Parameter")
IPYTHON_HOOKS = ("input_transformers_cleanup", "input_transformers_post", "ast_transformers")

_state: dict[str, Any] = {}


def _trusted_modules() -> dict[str, types.ModuleType]:
    return {
        name: module
        for name, module in list(sys.modules.items())
        if isinstance(module, types.ModuleType) and name.split(".")[0] in TRUSTED_PREFIXES
    }


def _resolve(dotted: str) -> Any:
    module_name, _, attribute = dotted.rpartition(".")
    module = sys.modules.get(module_name)
    return getattr(module, attribute, None) if module is not None else None


def install(imports: str) -> None:
    """Import what the reference imports and remember the pristine state (call before student code)."""
    exec(compile(imports, "<reference imports>", "exec"), {})
    modules = _trusted_modules()
    classes = {name: cls for name in TRUSTED_CLASSES if isinstance(cls := _resolve(name), type)}
    shell = _shell()
    _state.update(
        imports=imports,
        modules={name: (module, _snapshot(module)) for name, module in modules.items()},
        classes={name: (cls, _snapshot(cls)) for name, cls in classes.items()},
        hooks={hook: list(getattr(shell, hook)) for hook in IPYTHON_HOOKS} if shell else {},
        events={name: list(callbacks) for name, callbacks in shell.events.callbacks.items()} if shell else {},
        custom_exceptions=shell.custom_exceptions if shell else (),
        custom_handler=shell.CustomTB if shell else None,
    )


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - the kernel always has IPython
        return None
    return get_ipython()


def _is_code(value: Any) -> bool:
    """What a patch would replace: functions, classes, modules, descriptors (not data or caches)."""
    return callable(value) or isinstance(value, (types.ModuleType, property, staticmethod, classmethod))


def _snapshot(target: Any) -> dict[str, Any]:
    with warnings.catch_warnings():  # some modules warn when a deprecated attribute is touched
        warnings.simplefilter("ignore")
        return {key: value for key, value in vars(target).items() if _is_code(value)}


def _restore_attributes(target: Any, saved: dict[str, Any], remove_added: bool = False) -> None:
    current = vars(target)
    if remove_added:  # a class attribute added later may shadow a method of a C base class
        for key in [key for key, value in current.items() if key not in saved and _is_code(value)]:
            try:
                delattr(target, key)
            except (AttributeError, TypeError):
                pass
    for key, value in saved.items():
        if key not in current or current[key] is not value:
            try:
                setattr(target, key, value)
            except (AttributeError, TypeError):  # read-only slots of extension types
                pass


def restore() -> None:
    """Put back the modules, classes, builtins and IPython hooks as :func:`install` found them."""
    for module, saved in _state["modules"].values():
        _restore_attributes(module, saved)
    for cls, saved in _state["classes"].values():
        _restore_attributes(cls, saved, remove_added=True)
    shell = _shell()
    if shell is None:
        return
    for hook, saved in _state["hooks"].items():
        getattr(shell, hook)[:] = saved
    for name, saved in _state["events"].items():
        shell.events.callbacks[name][:] = saved
    shell.custom_exceptions = _state["custom_exceptions"]
    shell.CustomTB = _state["custom_handler"]


def _namespace() -> dict[str, Any]:
    """The student's variables, overlaid with fresh imports, on pristine builtins."""
    shell = _shell()
    namespace = dict(shell.user_ns) if shell else {}
    pristine = vars(sys.modules["builtins"])  # restored just before
    for name in [name for name in namespace if name in pristine and not name.startswith("_")]:
        del namespace[name]  # a student's `abs = ...` must not shadow the builtin in a check
    fresh: dict[str, Any] = {}
    exec(compile(_state["imports"], "<reference imports>", "exec"), fresh)
    fresh.pop("__builtins__", None)
    namespace.update(fresh)
    namespace["__builtins__"] = dict(pristine)
    return namespace


def _keep_results(namespace: dict[str, Any], before: dict[str, Any]) -> None:
    """Give the student's namespace what the check itself defined (later checks may use it)."""
    shell = _shell()
    if shell is None:
        return
    for key, value in namespace.items():
        if key != "__builtins__" and (key not in before or before[key] is not value):
            shell.user_ns[key] = value


def _failure(error: BaseException, filename: str, source: str) -> dict[str, Any]:
    """Where and why a check failed: the error and the check's line that raised it."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if frame.filename == filename]
    lineno = frames[-1].lineno if frames else None
    return {"type": type(error).__name__, "message": str(error) or type(error).__name__,
            "lineno": lineno, "line": _statement_at(source, lineno)}


def _statement_at(source: str, lineno: int | None) -> str:
    """The whole statement of ``source`` (an assert over several lines) that holds line ``lineno``."""
    if lineno is None:
        return ""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        tree = None
    statements = [node for node in ast.walk(tree) if isinstance(node, ast.stmt)] if tree else []
    around = [node for node in statements if node.lineno <= lineno <= (node.end_lineno or node.lineno)]
    innermost = min(around, key=lambda node: (node.end_lineno or node.lineno) - node.lineno, default=None)
    if innermost is not None and not isinstance(innermost, (ast.For, ast.While, ast.If, ast.With)):
        return textwrap.dedent(ast.get_source_segment(source, innermost, padded=True) or "").strip()
    lines = source.splitlines()
    return lines[lineno - 1].strip() if lineno <= len(lines) else ""


def run_check(check_id: str, token: str, visible: str, hidden: str = "") -> None:
    """Run one reference check: its visible part, then its hidden part, in a clean namespace."""
    restore()
    namespace = _namespace()
    before = dict(namespace)
    try:
        for part, source in (("visible", visible), ("hidden", hidden)):
            if not source.strip():
                continue
            filename = f"<{part} check {check_id}>"
            try:
                exec(compile(source, filename, "exec"), namespace)
            except BaseException as error:
                report = {"check": check_id, "part": part, **_failure(error, filename, source)}
                print(f"{token} failed {json.dumps(report)}", flush=True)
                raise
    finally:
        _keep_results(namespace, before)
    print(f"{token} passed {json.dumps(check_id)}", flush=True)


__all__ = ["install", "restore", "run_check"]
