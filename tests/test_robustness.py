"""The robustness runner: seed offsets, assert recording, and the per-assert report."""
import ast
import json

import nbformat
import numpy as np
import pytest
import torch

from mtl_course import robustness, runtime


def run_recorded(source: str, tmp_path, namespace=None):
    """Execute ``source`` with its top-level asserts rewritten; returns the records."""
    path = tmp_path / "records.jsonl"
    path.touch()
    tree = ast.fix_missing_locations(robustness.RecordAsserts().visit(ast.parse(source)))
    recorder = robustness.Recorder(path)
    recorder._cell = lambda: 7
    exec(compile(tree, "<cell>", "exec"), {robustness.RECORDER_NAME: recorder, **(namespace or {})})
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_failed_assert_is_recorded_and_does_not_stop_the_cell(tmp_path):
    records = run_recorded("x = 0.5\nassert x > 0.7, 'too small'\ny = 2\nassert y == 2\n", tmp_path)
    compares = [r for r in records if "compare" in r]
    claims = [r for r in records if "source" in r]
    assert [c["ok"] for c in claims] == [False, True]
    assert claims[0]["source"] == "x > 0.7"
    assert compares[0]["values"] == [0.5, 0.7]
    assert compares[0]["margin"] == pytest.approx(-0.2)


def test_chained_and_boolean_comparisons_keep_their_meaning(tmp_path):
    records = run_recorded("a = 3\nassert 0 < a < 2 or not a != 3\nassert a is not None and a in (1, 3)\n",
                           tmp_path)
    claims = [r["ok"] for r in records if "source" in r]
    assert claims == [True, True]  # 0 < 3 < 2 is False, but `not a != 3` is True
    chained = next(r for r in records if r.get("compare") == 1 and r["line"] == 2)
    assert chained["values"] == [0.0, 3.0, 2.0] and chained["ok"] is False


def test_short_circuit_is_kept(tmp_path):
    # the right side would raise if it were evaluated
    records = run_recorded("v = None\nassert v is None or v.missing > 1\n", tmp_path)
    assert [r["ok"] for r in records if "source" in r] == [True]


def test_asserts_inside_functions_are_left_alone(tmp_path):
    with pytest.raises(AssertionError, match="inside"):
        run_recorded("def f():\n    assert False, 'inside'\nf()\n", tmp_path)


def test_numbers_of_every_kind_are_read():
    assert robustness.as_number(np.float32(0.25)) == 0.25
    assert robustness.as_number(torch.tensor([1.5])) == 1.5
    assert robustness.as_number(torch.ones(2)) is None
    assert robustness.as_number(True) is None
    assert robustness.as_number("0.3") is None
    assert robustness.margin("<=", 1.0, 3.0) == 2.0
    assert robustness.margin("==", 1.0, 1.0) is None


def test_collect_counts_passes_per_assert_across_runs():
    def result(run, value):
        records = [{"count": 3, "line": 1, "compare": 1, "values": [value, 0.5], "margin": value - 0.5,
                    "ok": value > 0.5},
                   {"count": 3, "line": 1, "source": "acc > 0.5", "ok": value > 0.5}]
        return robustness.NotebookRun(run, 1.0, records, [], {3: 4})

    claims = robustness.collect([result(1, 0.6), result(2, 0.4), result(3, 0.9)])
    assert len(claims) == 1 and claims[0].cell == 4
    assert claims[0].passed == 2
    assert claims[0].values[(1, 0)] == [0.6, 0.4, 0.9]
    text = robustness.report(__import__("pathlib").Path("nb.ipynb"),
                             [result(1, 0.6), result(2, 0.4), result(3, 0.9)], claims)
    assert "FAIL 2/3" in text and "0.4 / 0.6 / 0.9" in text


def test_runner_executes_a_notebook_under_each_run(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import os\nfrom mtl_course import runtime\noffset = runtime.seed_offset()"),
        nbformat.v4.new_markdown_cell("text"),
        nbformat.v4.new_code_cell("assert offset >= 2, 'needs an offset of 2'\n"
                                  "assert os.environ.get('MKL_CBWR') != 'COMPATIBLE'"),
    ]
    path = tmp_path / "claims.ipynb"
    nbformat.write(nb, path)
    before = path.read_text()
    ok, text, summary = robustness.check_notebook(path, [1, 2], timeout=120)
    assert not ok
    assert path.read_text() == before  # the notebook itself is never changed
    by_line = {a["line"]: a for a in summary["asserts"]}
    assert all(a["cell"] == 2 for a in by_line.values())
    assert by_line[1]["passed"] == 1  # offset 1 fails, offset 2 holds
    assert by_line[2]["passed"] == 1  # run 2 sets MKL_CBWR=COMPATIBLE
    assert "FAIL 1/2" in text


def test_seed_offset_shifts_every_seed(monkeypatch):
    monkeypatch.delenv(runtime.SEED_OFFSET_VARIABLE, raising=False)
    runtime.seed_everything(5)
    a = torch.randn(3)
    plain = runtime.rng(5).random()
    monkeypatch.setenv(runtime.SEED_OFFSET_VARIABLE, "2")
    assert runtime.shift_seed(5) == 7
    runtime.seed_everything(3)
    assert torch.equal(torch.randn(3), a)  # 3 + 2 = 5
    assert runtime.rng(3).random() == plain
    assert torch.equal(torch.randn(2, generator=runtime.generator(3)),
                       torch.randn(2, generator=torch.Generator().manual_seed(5)))
    assert "seed+2" in runtime.compute_tag("cpu")
    assert "seed_offset=2" in runtime.describe()


def test_package_samplers_follow_the_seed_offset(monkeypatch):
    from mtl_course.data import SinusoidTasks

    monkeypatch.delenv(runtime.SEED_OFFSET_VARIABLE, raising=False)
    shifted_by_hand = SinusoidTasks(seed=4).sample_episode(5, 5).query_y
    monkeypatch.setenv(runtime.SEED_OFFSET_VARIABLE, "4")
    assert torch.equal(SinusoidTasks(seed=0).sample_episode(5, 5).query_y, shifted_by_hand)


@pytest.mark.parametrize("value", ["-1", "two", "1.5"])
def test_bad_seed_offset_says_what_to_do(monkeypatch, value):
    monkeypatch.setenv(runtime.SEED_OFFSET_VARIABLE, value)
    with pytest.raises(ValueError, match="non-negative integer"):
        runtime.seed_offset()


def test_cache_tag_names_the_emulated_machine(monkeypatch):
    monkeypatch.delenv(runtime.SEED_OFFSET_VARIABLE, raising=False)
    for name in runtime.ROUNDING_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    plain = runtime.compute_tag("cpu")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    assert runtime.compute_tag("cpu") == plain + "-atendefault"
