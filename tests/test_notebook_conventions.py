"""Repository-level checks of the notebook conventions (CONTRIBUTING.md, design section 6).

Every chapter (``book/*.ipynb``), reference solution (``solutions/*.ipynb``)
and generated exercise (``exercises/*.ipynb``) must:

- be a valid notebook;
- open with a markdown cell holding a ``# `` title and a Colab badge that
  points at the notebook's own path on the main branch;
- continue with a setup cell that ``%pip install``s the package only on Colab;
- store no error outputs, no warnings, no machine paths, and never end a code
  cell with a bare ``;``;
- keep code lines to 88 characters (which the book's code font fits), show no test markers, and
  (chapters) fold the setup cell with ``hide-input``.

The table of contents must list exactly the notebooks that exist, and the
nbval sanitize file must do what its comments say.

Notebooks are found relative to this file, so the tests run from any directory.
"""
from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = "https://github.com/mtl-course/mtl_course"
COLAB_PREFIX = "https://colab.research.google.com/github/mtl-course/mtl_course/blob/main/"
COLAB_URL_RE = re.compile(r"https?://colab\.research\.google\.com/[^\s)\"'<>\]]+")
MACHINE_PATHS = ("/root/", "/home/", "/tmp/", "/work/", "/Users/")
WARNING_RE = re.compile(r"\b\w*Warning\b")
SANITIZE_FILE = ROOT / "tests" / "nbval_sanitize.cfg"


def _notebooks(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).glob("*.ipynb") if p.is_file())


BOOK = _notebooks("book")
SOLUTIONS = _notebooks("solutions")
EXERCISES = _notebooks("exercises")
AUTHORED = BOOK + SOLUTIONS          # written by hand, executed, outputs stored
ALL = AUTHORED + EXERCISES           # everything a reader or student opens


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _params(paths: list[Path], what: str):
    if not paths:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no {what} notebooks yet"))]
    return [pytest.param(p, id=_rel(p)) for p in paths]


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _output_texts(output) -> list[tuple[str, str]]:
    """(kind, text) pairs for every textual part of one stored output (images skipped)."""
    texts = []
    if output.get("output_type") == "stream":
        texts.append((f"stream:{output.get('name', '')}", _source({"source": output.get("text", "")})))
    for mime, value in (output.get("data") or {}).items():
        if mime.startswith("image/") and mime != "image/svg+xml":
            continue  # base64: may contain "/tmp/" by chance
        if isinstance(value, list):
            value = "".join(value)
        if isinstance(value, str):
            texts.append((mime, value))
    if output.get("output_type") == "error":
        texts.append(("error", "\n".join(output.get("traceback", []))))
    return texts


# --------------------------------------------------------------------------------------
# Format, title and Colab badge
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", _params(ALL, "book, solution or exercise"))
def test_is_valid_notebook(path):
    nb = _read(path)
    nbformat.validate(nb)
    assert nb.cells, f"{_rel(path)} has no cells"


@pytest.mark.parametrize("path", _params(ALL, "book, solution or exercise"))
def test_first_cell_has_title_and_colab_badge_to_own_path(path):
    nb = _read(path)
    first = nb.cells[0]
    assert first.cell_type == "markdown", (
        f"{_rel(path)}: the first cell must be markdown (title + Colab badge), "
        f"found a {first.cell_type} cell"
    )
    text = _source(first)
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines and lines[0].startswith("# "), (
        f"{_rel(path)}: the first cell must start with a '# Title' line, found {lines[:1]}"
    )
    expected = COLAB_PREFIX + _rel(path)
    urls = [u for u in COLAB_URL_RE.findall(text) if "/assets/" not in u]
    assert urls, (
        f"{_rel(path)}: the first cell has no Colab badge; add\n"
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({expected})"
    )
    wrong = [u for u in urls if u != expected]
    assert not wrong, f"{_rel(path)}: Colab link(s) {wrong} should be exactly {expected}"
    assert "colab-badge.svg" in text, (
        f"{_rel(path)}: link to Colab with the badge image "
        "https://colab.research.google.com/assets/colab-badge.svg"
    )


# --------------------------------------------------------------------------------------
# Setup cell
# --------------------------------------------------------------------------------------

def _guarded_by_colab_check(lines: list[str], index: int) -> bool:
    """True if lines[index] sits inside an ``if`` block whose condition mentions Colab."""
    indent = len(lines[index]) - len(lines[index].lstrip())
    if indent == 0:
        return False
    for line in reversed(lines[:index]):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        this_indent = len(line) - len(line.lstrip())
        if this_indent < indent:
            stripped = line.strip()
            if stripped.startswith(("if ", "elif ")) and "colab" in stripped.lower():
                return True
            if this_indent == 0:
                return False
            indent = this_indent
    return False


@pytest.mark.parametrize("path", _params(ALL, "book, solution or exercise"))
def test_second_cell_installs_package_only_on_colab(path):
    nb = _read(path)
    assert len(nb.cells) >= 2, f"{_rel(path)}: needs a setup cell after the title cell"
    setup = nb.cells[1]
    assert setup.cell_type == "code", (
        f"{_rel(path)}: the second cell must be the code setup cell, found {setup.cell_type}"
    )
    src = _source(setup)
    assert "google.colab" in src or "in_colab" in src, (
        f"{_rel(path)}: the setup cell must detect Colab (`'google.colab' in sys.modules` "
        "or `runtime.in_colab()`)"
    )
    lines = src.splitlines()
    pip_lines = [i for i, line in enumerate(lines) if "%pip install" in line]
    assert pip_lines, f"{_rel(path)}: the setup cell must `%pip install` the package on Colab"
    assert any(f"git+{REPOSITORY}" in lines[i] for i in pip_lines), (
        f"{_rel(path)}: the setup cell must install git+{REPOSITORY}"
    )
    for i in pip_lines:
        assert _guarded_by_colab_check(lines, i), (
            f"{_rel(path)}: `{lines[i].strip()}` must run only on Colab; put it inside "
            "`if in_colab:` (or `if 'google.colab' in sys.modules:`)"
        )


# --------------------------------------------------------------------------------------
# Code cells and stored outputs
# --------------------------------------------------------------------------------------

def _ends_with_bare_semicolon(src: str) -> bool:
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(src).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        lines = [re.sub(r"\s+#.*$", "", line).rstrip() for line in src.splitlines()]
        lines = [line for line in lines if line and not line.lstrip().startswith("#")]
        return bool(lines) and lines[-1].endswith(";")
    skip = {tokenize.NEWLINE, tokenize.NL, tokenize.COMMENT, tokenize.ENDMARKER,
            tokenize.INDENT, tokenize.DEDENT}
    meaningful = [t for t in tokens if t.type not in skip]
    return bool(meaningful) and meaningful[-1].string == ";"


@pytest.mark.parametrize("path", _params(ALL, "book, solution or exercise"))
def test_no_code_cell_ends_with_bare_semicolon(path):
    nb = _read(path)
    bad = [i for i, c in enumerate(nb.cells)
           if c.cell_type == "code" and _ends_with_bare_semicolon(_source(c))]
    assert not bad, (
        f"{_rel(path)}: code cell(s) {bad} end with ';'. Use `_ = ...` or `plt.show()` "
        "instead, so that the stored output does not depend on it"
    )


MAX_CODE_LINE = 88
"""The longest code line that fits a code cell of the built book at 1280 px without scrolling sideways."""
CODE_BOX_PX = 654
"""Width inside the border of the narrowest code box of the built book at a 1280 px window: a
folded (``hide-input``) cell, measured in headless Chromium (``clientWidth`` of its ``pre``;
a text output's box is 676 px)."""
MONOSPACE_ADVANCE_EM = 0.602
"""Width of one character of the theme's monospace font (DejaVu Sans Mono, Menlo), in em."""


def test_the_books_code_font_fits_a_longest_code_line():
    css = (ROOT / "_static" / "cells.css").read_text()
    size = float(re.search(r"font-size:\s*([\d.]+)px", css).group(1))
    padding = [float(px) for px in re.findall(r"padding-(?:left|right):\s*([\d.]+)px", css)]
    assert len(padding) == 2, "_static/cells.css sets the left and right padding of code boxes in px"
    fits = (CODE_BOX_PX - sum(padding)) / (MONOSPACE_ADVANCE_EM * size)
    assert fits >= MAX_CODE_LINE, (
        f"at {size} px with {padding} px padding a code cell holds {fits:.1f} characters, fewer than the "
        f"{MAX_CODE_LINE} that the notebooks may use: lower the font size or padding in _static/cells.css"
    )


@pytest.mark.parametrize("path", _params(ALL, "book, solution or exercise"))
def test_no_test_marker_shows_in_the_code(path):
    marked = [i for i, c in enumerate(_read(path).cells) if c.cell_type == "code"
              and any(line.strip() == "# NBVAL_IGNORE_OUTPUT" for line in _source(c).splitlines())]
    assert not marked, (
        f"{_rel(path)}: cells {marked} show `# NBVAL_IGNORE_OUTPUT` to the reader; remove the line and tag the "
        "cell `nbval-ignore-output` instead (cell metadata), as CONTRIBUTING.md says"
    )


@pytest.mark.parametrize("path", _params(ALL, "book, solution or exercise"))
def test_code_lines_fit_the_page(path):
    nb = _read(path)
    long = [(i, len(line)) for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for line in _source(c).splitlines() if len(line) > MAX_CODE_LINE]
    assert not long, (
        f"{_rel(path)}: code lines longer than {MAX_CODE_LINE} characters (cell, length): {long[:8]}. "
        f"Wrap them (e.g. `ruff format --line-length {MAX_CODE_LINE}`, then shorten comments and strings)"
    )


def _shown_text(output) -> str:
    """What the book shows of one stored output as monospace text (a widget shows itself instead)."""
    data = output.get("data") or {}
    if output.get("output_type") == "stream":
        return _source({"source": output.get("text", "")})
    if any(k in data for k in ("text/html", "image/png", "application/vnd.jupyter.widget-view+json")):
        return ""
    return _source({"source": data.get("text/plain", "")})


@pytest.mark.parametrize("path", _params(BOOK + SOLUTIONS, "book or solution"))
def test_text_outputs_fit_the_page(path):
    long = [(i, len(line)) for i, c in enumerate(_read(path).cells) if c.cell_type == "code"
            for output in c.get("outputs", []) for line in _shown_text(output).splitlines()
            if len(line) > MAX_CODE_LINE]
    assert not long, (
        f"{_rel(path)}: printed lines longer than {MAX_CODE_LINE} characters (cell, length): {long[:8]}; "
        "they scroll sideways in the book. Print long lists on lines of their own (textwrap.fill), "
        "split long sentences and give wide tables shorter column names"
    )


@pytest.mark.parametrize("path", _params(BOOK, "book"))
def test_setup_cell_is_folded_in_the_book(path):
    setup = _read(path).cells[1]
    assert "hide-input" in setup.metadata.get("tags", []), (
        f"{_rel(path)}: tag the setup cell `hide-input`, so that the page shows its printout, not its plumbing"
    )


@pytest.mark.parametrize("path", _params(ALL, "book, solution or exercise"))
def test_no_stored_error_outputs(path):
    nb = _read(path)
    bad = [(i, o.get("ename")) for i, c in enumerate(nb.cells) if c.cell_type == "code"
           for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not bad, f"{_rel(path)}: stored error output(s) in cells {bad}; fix and re-execute"


@pytest.mark.parametrize("path", _params(ALL, "book, solution or exercise"))
def test_no_machine_paths_in_stored_outputs(path):
    nb = _read(path)
    found = []
    for i, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            for kind, text in _output_texts(output):
                for marker in MACHINE_PATHS:
                    if marker in text:
                        found.append((i, kind, marker))
    assert not found, (
        f"{_rel(path)}: stored outputs contain machine paths (cell, output, path): {found}. "
        "Print paths relative to the data directory, or not at all"
    )


@pytest.mark.parametrize("path", _params(AUTHORED, "book or solution"))
def test_no_warnings_in_stored_outputs(path):
    nb = _read(path)
    found = []
    for i, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                match = WARNING_RE.search(_source({"source": output.get("text", "")}))
                if match:
                    found.append((i, match.group(0)))
    assert not found, (
        f"{_rel(path)}: stored outputs contain warnings (cell, warning): {found}. "
        "Fix their cause; they differ between library versions and fail strict nbval"
    )


@pytest.mark.parametrize("path", _params(EXERCISES, "exercise"))
def test_exercises_are_stored_without_outputs(path):
    nb = _read(path)
    bad = [i for i, c in enumerate(nb.cells)
           if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not bad, (
        f"{_rel(path)}: exercise cells {bad} carry outputs; exercises are generated "
        "without outputs by `make exercises`"
    )


# --------------------------------------------------------------------------------------
# Table of contents
# --------------------------------------------------------------------------------------

def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in toc.items() if k != "root"})
    return files


def _strip_suffix(entry: str) -> str:
    return re.sub(r"\.(ipynb|md)$", "", entry)


def test_every_toc_entry_exists():
    missing = [entry for entry in _toc_files()
               if not any((ROOT / (_strip_suffix(entry) + ext)).is_file() for ext in (".ipynb", ".md"))]
    assert not missing, (
        f"_toc.yml lists files that do not exist: {missing}. "
        "Add the notebook or remove the line (a missing file fails the book build)"
    )


def test_every_book_and_exercise_notebook_is_in_the_toc():
    listed = {_strip_suffix(entry) for entry in _toc_files()}
    unlisted = [_rel(p) for p in BOOK + EXERCISES if _strip_suffix(_rel(p)) not in listed]
    assert not unlisted, (
        f"notebooks missing from _toc.yml (the book would silently leave them out): {unlisted}"
    )


# --------------------------------------------------------------------------------------
# nbval sanitize file
# --------------------------------------------------------------------------------------

def _sanitize_patterns() -> list[tuple[str, str]]:
    from nbval.plugin import get_sanitize_patterns  # the parser nbval itself uses

    return get_sanitize_patterns(SANITIZE_FILE.read_text(encoding="utf-8"))


def _sanitize(text: str) -> str:
    for regex, replace in _sanitize_patterns():
        text = re.sub(regex, replace, text)
    return text


def test_sanitize_file_parses_and_every_pattern_compiles():
    patterns = _sanitize_patterns()
    declared = len(re.findall(r"^regex:", SANITIZE_FILE.read_text(encoding="utf-8"), re.M))
    assert len(patterns) == declared, (
        f"nbval reads {len(patterns)} of the {declared} patterns in {SANITIZE_FILE.name}: "
        "each 'regex:' line must be followed directly by its 'replace:' line"
    )
    for regex, _ in patterns:
        re.compile(regex)


@pytest.mark.parametrize("run_a, run_b", [
    ("<function f at 0x7f3a2c1d9e40>", "<function f at 0x55d0c0ffee00>"),
    ("File /tmp/ipykernel_1234/567890.py:3", "File /tmp/ipykernel_98/12.py:3"),
    ("saved to /tmp/tmpab12cd/model.pt", "saved to /tmp/tmpzz99yy/model.pt"),
    ("/var/folders/x1/abc/T/tmpq/file.npz", "/tmp/tmpq2/file.npz"),
    ("/home/alice/.cache/mtl_course/glyphs.npz", "/root/.cache/mtl_course/glyphs.npz"),
    ("/opt/venv/lib/python3.11/site-packages/torch/nn/f.py", "/usr/lib/python3/dist-packages/torch/nn/f.py"),
    ("trained in 1.23 s", "trained in 0.98 s"),
    ("100%|##########| 50/50 [00:01<00:00, 31.2it/s]", "100%|##########| 50/50 [00:03<00:00, 15.0it/s]"),
    ("epoch 3: 1.2s/it", "epoch 3: 850ms/it"),
    ("took 3.4 s, elapsed: 12.0s", "took 0.2 s, elapsed: 1.5s"),
    ("CPU times: user 1.2 s, sys: 3 ms, total: 1.2 s", "CPU times: user 9 s, sys: 1 s, total: 10 s"),
    ("Wall time: 3.4 s", "Wall time: 812 ms"),
    ("run at 2025-01-31 12:34:56.789", "run at 2026-02-01T01:02:03"),
    ('<table id="T_3f2a1"><td id="T_3f2a1_row0_col0">', '<table id="T_9bc00"><td id="T_9bc00_row0_col0">'),
])
def test_sanitize_makes_meaningless_differences_vanish(run_a, run_b):
    assert _sanitize(run_a) == _sanitize(run_b), (
        f"{run_a!r} and {run_b!r} should compare equal after sanitizing; "
        f"got {_sanitize(run_a)!r} and {_sanitize(run_b)!r}"
    )


@pytest.mark.parametrize("text", [
    "accuracy 0.853 +- 0.012 over 600 episodes",
    "5-way 1-shot: MAML 0.62, scratch 0.31",
    "converged in 600 steps",
    "image size 28x28, Figure size 640x480 with 1 Axes",
    "device=cpu profile=quick torch=2.14.1",
    "Delta_p = +3.2%, loss 0.0345",
    "in 5 shots per class",
])
def test_sanitize_keeps_meaningful_output(text):
    assert _sanitize(text) == text, f"sanitizing changed meaningful output: {text!r} -> {_sanitize(text)!r}"
