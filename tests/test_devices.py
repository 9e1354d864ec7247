"""Device care: every recipe's first steps run on each accelerator that is present.

The recipes take the device as an argument and every tensor they create must
follow the model there (data moved batch by batch, loss weights and inner-loop
step weights moved to the losses' device, optimizer state created on the
parameters' device). The CPU path of every recipe runs in the store's
provenance test; this file runs the same first steps on CUDA or MPS when the
machine has one, and is skipped otherwise.
"""
from __future__ import annotations

import math

import pytest
import torch

from mtl_course import runtime, store


def _available(kind: str) -> bool:
    if kind == "cuda":
        return torch.cuda.is_available()
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


ACCELERATORS = [pytest.param(kind, marks=pytest.mark.skipif(not _available(kind), reason=f"no {kind} device"))
                for kind in ("cuda", "mps")]


def check_first_steps_on(kind: str, name: str) -> None:
    recipe, entry = store.recipe(name), store.entry(name)
    result = recipe.train(dict(recipe.config), recipe.seed, max_steps=2, device=torch.device(kind))
    placed = {p.device.type for p in result.model.parameters()}
    assert placed == {kind}, f"{name}: parameters ended up on {placed}, not on {kind}"
    assert len(result.step_losses) == 2 and all(math.isfinite(x) for x in result.step_losses)
    # the accelerator's kernels round differently (TF32 convolutions on CUDA), far less than 1 %
    assert result.step_losses[0] == pytest.approx(entry["curve"]["early_losses"][0], rel=1e-2)


@pytest.mark.parametrize("kind", ACCELERATORS)
@pytest.mark.parametrize("name", sorted(store.recipes()))
def test_recipe_first_steps_follow_the_model_to_the_accelerator(name, kind, monkeypatch):
    monkeypatch.delenv(runtime.SEED_OFFSET_VARIABLE, raising=False)
    check_first_steps_on(kind, name)


def test_the_device_check_itself_runs_on_the_cpu(monkeypatch):
    monkeypatch.delenv(runtime.SEED_OFFSET_VARIABLE, raising=False)
    check_first_steps_on("cpu", "sinusoid-maml-mlp")
