"""The floors pyproject.toml declares are the versions `make test-min-versions` installs."""
import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _floors() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = {}
    for dep in deps:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", dep.replace(" ", ""))
        assert match, f"pyproject.toml: {dep!r} must be written 'name>=floor'"
        floors[match[1].lower()] = match[2]
    return floors


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements-min.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def test_every_dependency_has_a_floor_that_the_minimum_run_installs():
    floors, pins = _floors(), _pins()
    for name, floor in floors.items():
        assert name in pins, f"requirements-min.txt does not install {name}"
        assert pins[name] == floor or pins[name].startswith(floor + "."), (
            f"{name}: pyproject.toml says >={floor}, requirements-min.txt installs {pins[name]}")


def test_the_package_imports_nothing_undeclared():
    declared = set(_floors()) | {"ipywidgets", "torchvision"}  # the optional extras
    modules_of = {"scikit-learn": {"sklearn"}, "pillow": {"PIL"}, "ipykernel": {"ipykernel", "IPython"},
                  "jupyter-client": {"jupyter_client"}}
    importable = set().union(*(modules_of.get(d, {d}) for d in declared))
    stdlib = set(__import__("sys").stdlib_module_names)
    found = set()
    for path in (ROOT / "mtl_course").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                found.add(node.module.split(".")[0])
    third_party = {m for m in found if m not in stdlib and m not in ("mtl_course", "__future__")}
    assert third_party <= importable, f"imported but not declared in pyproject.toml: {third_party - importable}"
