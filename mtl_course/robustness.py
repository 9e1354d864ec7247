"""Robustness runs: does every asserted claim hold under other seeds and other processors?

PyTorch's CPU kernels round differently on different processors, and training
amplifies the difference. A chapter may claim only what holds on any machine
and any seed, so ``make test-robust`` executes each notebook several times,
each run with another seed offset (``MTL_COURSE_SEED``) and another emulated
machine, and reports for every ``assert`` how many runs it passed in, together
with the smallest, median and largest value of each number it compares and of
its margin (how far the claim was from failing)::

    python -m mtl_course.robustness book/07_pairwise_fusions.ipynb --runs 1 2 3

How it sees the asserts: before the notebook's first cell the runner installs
an IPython AST transformer (:func:`install`) that rewrites each top-level
``assert`` of a cell into a call that records the assert's verdict and the
operands of its comparisons, and does *not* raise, so one failed claim does
not hide the ones after it. Asserts inside functions the notebook defines are
left alone. The notebook file itself is never changed.
"""
from __future__ import annotations

import argparse
import ast
import copy
import json
import math
import operator
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

# ---------------------------------------------------------------------------
# The runs: a seed offset and an emulated machine each
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One robustness run: the seed offset and the environment that emulates another machine."""

    seed_offset: int
    env: dict[str, str]
    label: str


RUNS: dict[int, Run] = {
    0: Run(0, {}, "this machine, the notebook's own seeds (what strict nbval compares)"),
    1: Run(1, {"ATEN_CPU_CAPABILITY": "default"}, "ATen without vector kernels"),
    2: Run(2, {"MKL_CBWR": "COMPATIBLE"}, "MKL in compatible mode"),
    3: Run(3, {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}, "one thread"),
    4: Run(4, {"ONEDNN_MAX_CPU_ISA": "SSE41"}, "oneDNN limited to SSE4.1"),
}
DEFAULT_RUNS = (1, 2, 3)

# ---------------------------------------------------------------------------
# Kernel side: the recorder and the AST transformer
# ---------------------------------------------------------------------------

_OPERATORS = {
    ast.Lt: ("<", operator.lt), ast.LtE: ("<=", operator.le), ast.Gt: (">", operator.gt),
    ast.GtE: (">=", operator.ge), ast.Eq: ("==", operator.eq), ast.NotEq: ("!=", operator.ne),
    ast.Is: ("is", operator.is_), ast.IsNot: ("is not", operator.is_not),
    ast.In: ("in", lambda a, b: a in b), ast.NotIn: ("not in", lambda a, b: a not in b),
}
_BY_SYMBOL = {symbol: function for symbol, function in _OPERATORS.values()}
RECORDER_NAME = "__robustness__"


def as_number(value: Any) -> float | None:
    """``value`` as a float when it is one number (Python, NumPy or a one-element tensor), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        if getattr(value, "shape", None) is not None and math.prod(value.shape) == 1:
            return float(value.reshape(-1)[0])
    except (TypeError, ValueError, RuntimeError):
        return None
    return None


def margin(symbol: str, left: Any, right: Any) -> float | None:
    """How far ``left symbol right`` is from failing: positive when it holds, in the operands' units."""
    a, b = as_number(left), as_number(right)
    if a is None or b is None:
        return None
    if symbol in (">", ">="):
        return a - b
    if symbol in ("<", "<="):
        return b - a
    return None


class Recorder:
    """Appends one JSON line per evaluated comparison and assert to ``path``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.cells_run = 0  # cells started since install(): the k-th non-empty code cell after it

    def _cell(self) -> int:
        return self.cells_run

    def next_cell(self, *_: Any) -> None:
        self.cells_run += 1

    def _write(self, record: dict) -> None:
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")

    def compare(self, line: int, index: int, symbols: list[str], *operands: Any) -> bool:
        """Evaluate the chained comparison ``operands[0] symbols[0] operands[1] ...`` and record it."""
        result, margins = True, []
        for symbol, left, right in zip(symbols, operands, operands[1:]):
            result = result and bool(_BY_SYMBOL[symbol](left, right))
            margins.append(margin(symbol, left, right))
        known = [m for m in margins if m is not None]
        self._write({"count": self._cell(), "line": line, "compare": index,
                     "values": [as_number(v) for v in operands],
                     "margin": min(known) if known else None, "ok": result})
        return result

    def claim(self, line: int, source: str, passed: Any) -> None:
        """Record the verdict of the assert on ``line``; never raises, so later claims still run."""
        self._write({"count": self._cell(), "line": line, "source": source, "ok": bool(passed)})


class RecordAsserts(ast.NodeTransformer):
    """Rewrites each top-level ``assert test, message`` into ``__robustness__.claim(line, source, test')``.

    In ``test'`` every comparison reachable through ``and``/``or``/``not``
    becomes a call to :meth:`Recorder.compare` (short-circuiting is kept).
    """

    def visit_FunctionDef(self, node: ast.AST) -> ast.AST:  # asserts inside functions stay as written
        return node

    visit_AsyncFunctionDef = visit_ClassDef = visit_Lambda = visit_FunctionDef

    def visit_Assert(self, node: ast.Assert) -> ast.AST:
        self._index = 0
        text = ast.unparse(node.test)
        test = self._wrap(node.test, node.lineno)
        recorder = ast.Name(RECORDER_NAME, ast.Load())
        call = ast.Call(ast.Attribute(recorder, "claim", ast.Load()),
                        [ast.Constant(node.lineno), ast.Constant(" ".join(text.split())), test], [])
        return ast.copy_location(ast.Expr(call), node)

    def _wrap(self, node: ast.expr, line: int) -> ast.expr:
        if isinstance(node, ast.BoolOp):
            node.values = [self._wrap(value, line) for value in node.values]
            return node
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            node.operand = self._wrap(node.operand, line)
            return node
        if isinstance(node, ast.Compare) and all(type(op) in _OPERATORS for op in node.ops):
            self._index += 1
            symbols = ast.List([ast.Constant(_OPERATORS[type(op)][0]) for op in node.ops], ast.Load())
            recorder = ast.Name(RECORDER_NAME, ast.Load())
            return ast.copy_location(ast.Call(
                ast.Attribute(recorder, "compare", ast.Load()),
                [ast.Constant(line), ast.Constant(self._index), symbols, node.left, *node.comparators], []), node)
        return node


class _CellTransformer(ast.NodeTransformer):
    """The hook IPython calls with each cell's syntax tree."""

    def visit_Module(self, node: ast.Module) -> ast.Module:
        return ast.fix_missing_locations(RecordAsserts().visit(node))


def install(path: str | os.PathLike) -> None:
    """Run inside the kernel: record every top-level assert of the cells that follow into ``path``."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        raise RuntimeError("robustness.install() must run inside an IPython kernel")
    recorder = Recorder(path)
    shell.user_ns[RECORDER_NAME] = recorder
    shell.events.register("pre_run_cell", recorder.next_cell)
    shell.ast_transformers.append(_CellTransformer())


# ---------------------------------------------------------------------------
# Runner side: execute, collect, summarise
# ---------------------------------------------------------------------------


@dataclass
class NotebookRun:
    """What one run of one notebook produced."""

    run: int
    seconds: float
    records: list[dict]
    errors: list[str]  # cells that raised something other than a recorded assert
    counts: dict[int, int]  # k-th code cell run -> its index in the notebook


def execute(path: Path, run: Run, number: int, timeout: int) -> NotebookRun:
    """Execute a copy of the notebook at ``path`` under ``run``; the file itself is not touched."""
    import nbformat

    from .grading.execute import kernel_env, make_client

    nb = nbformat.read(path, as_version=4)
    nb = copy.deepcopy(nb)
    with tempfile.TemporaryDirectory() as folder:
        record_path = Path(folder) / "records.jsonl"
        record_path.touch()
        setup = nbformat.v4.new_code_cell(f"import mtl_course.robustness\nmtl_course.robustness.install({str(record_path)!r})")
        nb.cells.insert(0, setup)
        env = {**kernel_env(), **run.env, "MTL_COURSE_SEED": str(run.seed_offset)}
        client = make_client(nb, path.parent, timeout=timeout, allow_errors=True)
        started = time.perf_counter()
        client.execute(env=env)
        seconds = time.perf_counter() - started
        records = [json.loads(line) for line in record_path.read_text().splitlines() if line.strip()]
    counts, errors = {}, []
    for index, cell in enumerate(nb.cells[1:]):
        if cell.cell_type != "code" or not cell.source.strip():
            continue  # nbclient runs neither
        counts[len(counts) + 1] = index
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                errors.append(f"cell {index}: {output.get('ename')}: {output.get('evalue', '')[:300]}")
    return NotebookRun(number, seconds, records, errors, counts)


@dataclass
class Claim:
    """One assert across the runs: its verdicts, and the values of its comparisons."""

    cell: int
    line: int
    source: str = ""
    verdicts: dict[int, bool] = field(default_factory=dict)
    values: dict[tuple[int, int], list[float]] = field(default_factory=dict)  # (compare, operand) -> values
    margins: dict[int, list[float]] = field(default_factory=dict)  # run -> margins

    @property
    def passed(self) -> int:
        return sum(self.verdicts.values())


def collect(runs: Iterable[NotebookRun]) -> list[Claim]:
    """Group the records of all runs by assert (cell index and line)."""
    claims: dict[tuple[int, int], Claim] = {}
    for result in runs:
        seen: dict[tuple[int, int], bool] = {}
        for record in result.records:
            key = (result.counts.get(record["count"], -1), record["line"])
            claim = claims.setdefault(key, Claim(*key))
            if "source" in record:
                claim.source = record["source"]
                seen[key] = seen.get(key, True) and record["ok"]
                continue
            for j, value in enumerate(record["values"]):
                if value is not None:
                    claim.values.setdefault((record["compare"], j), []).append(value)
            if record["margin"] is not None:
                claim.margins.setdefault(result.run, []).append(record["margin"])
        for key, ok in seen.items():
            claims[key].verdicts[result.run] = ok
    return sorted(claims.values(), key=lambda c: (c.cell, c.line))


def _spread(values: list[float]) -> str:
    return f"{min(values):.4g} / {statistics.median(values):.4g} / {max(values):.4g}"


def report(path: Path, runs: list[NotebookRun], claims: list[Claim]) -> str:
    """The per-notebook summary: each assert's pass count, then the spread of its numbers and margin."""
    lines = [f"== {path}"]
    lines += [f"   run {r.run} ({RUNS[r.run].label}, seed offset {RUNS[r.run].seed_offset}): {r.seconds:.0f} s"
              for r in runs]
    for r in runs:
        lines += [f"   run {r.run} ERROR {error}" for error in r.errors]
    for claim in claims:
        mark = "ok  " if claim.passed == len(runs) else "FAIL"
        lines.append(f"   {mark} {claim.passed}/{len(runs)}  cell {claim.cell} line {claim.line}: "
                     f"assert {claim.source[:110]}")
        for (compare, operand), values in sorted(claim.values.items()):
            lines.append(f"          compare {compare} operand {operand}: min/median/max {_spread(values)}")
        margins = [min(m) for m in claim.margins.values()]
        if margins:
            lines.append(f"          margin (min per run): {_spread(margins)}")
    return "\n".join(lines)


def summary(claims: list[Claim], runs: list[NotebookRun]) -> dict:
    """The JSON form of one notebook's result."""
    return {
        "runs": [{"run": r.run, "label": RUNS[r.run].label, "seed_offset": RUNS[r.run].seed_offset,
                  "env": RUNS[r.run].env, "seconds": round(r.seconds, 1), "errors": r.errors} for r in runs],
        "asserts": [{"cell": c.cell, "line": c.line, "source": c.source, "passed": c.passed, "runs": len(runs),
                     "values": {f"{k[0]}.{k[1]}": v for k, v in sorted(c.values.items())},
                     "min_margin_per_run": {str(k): min(v) for k, v in c.margins.items()}} for c in claims],
    }


def check_notebook(path: Path, numbers: Iterable[int], timeout: int = 900) -> tuple[bool, str, dict]:
    """Run one notebook under each run in ``numbers``; returns (all claims held, report, JSON summary)."""
    runs = [execute(path, RUNS[n], n, timeout) for n in numbers]
    claims = collect(runs)
    ok = all(c.passed == len(runs) for c in claims) and not any(r.errors for r in runs)
    return ok, report(path, runs, claims), summary(claims, runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtl_course.robustness", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--runs", nargs="+", type=int, default=list(DEFAULT_RUNS), choices=sorted(RUNS),
                        help="which runs (default: %(default)s): " +
                        "; ".join(f"{n}: seed offset {r.seed_offset}, {r.label}" for n, r in RUNS.items()))
    parser.add_argument("--out", type=Path, default=Path("_build/robustness"),
                        help="folder for one JSON result per notebook (default: %(default)s)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell (default: %(default)s)")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.notebooks if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for path in args.notebooks:
        ok, text, result = check_notebook(path, args.runs, args.timeout)
        print(text, flush=True)
        (args.out / f"{path.stem}.json").write_text(json.dumps(result, indent=1) + "\n")
        if not ok:
            failed.append(str(path))
    print(f"\n{len(args.notebooks) - len(failed)} of {len(args.notebooks)} notebook(s) held every claim in "
          f"every run ({', '.join(str(n) for n in args.runs)})")
    if failed:
        print("claims that failed in some run:", *failed, sep="\n  ", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
