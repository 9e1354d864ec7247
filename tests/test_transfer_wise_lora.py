"""Tests of WiSE-FT (weight-space mixing) and LoRA (low-rank adaptation) in mtl_course.transfer."""
from __future__ import annotations

import copy
import doctest

import pytest
import torch
from torch import nn

from mtl_course import models, runtime, training, transfer
from mtl_course.data import LabelledSet


def _conv4(out: int = 4, hidden: int = 8) -> models.Conv4:
    runtime.seed_everything(0)
    return models.Conv4(1, hidden, out, image_size=16)


def _images(n_classes: int = 4, per_class: int = 6, seed: int = 0) -> LabelledSet:
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n_classes, 1, 16, 16, generator=g)
    y = torch.arange(n_classes).repeat_interleave(per_class)
    X = (means[y] + 0.1 * torch.randn(len(y), 1, 16, 16, generator=g)).clamp(0, 1)
    return LabelledSet(X, y, [f"c{i}" for i in range(n_classes)])


def _moved(model: nn.Module, seed: int = 1) -> nn.Module:
    """A copy of ``model`` with every parameter perturbed (a stand-in for fine-tuning)."""
    g = torch.Generator().manual_seed(seed)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=g))
    return other


def test_docstring_examples_run():
    result = doctest.testmod(transfer)
    assert result.attempted >= 1 and result.failed == 0


def test_wise_ft_ends_are_the_two_models_and_the_middle_is_their_mean():
    a = _conv4()
    b = _moved(a)
    x = torch.rand(3, 1, 16, 16)
    assert torch.equal(transfer.wise_ft(a, b, 0.0)(x), a(x))
    assert torch.equal(transfer.wise_ft(a, b, 1.0)(x), b(x))
    half = dict(transfer.wise_ft(a, b, 0.5).named_parameters())
    for name, p in a.named_parameters():
        torch.testing.assert_close(half[name], (p + dict(b.named_parameters())[name]) / 2)


def test_wise_ft_leaves_both_models_unchanged_and_mixes_buffers():
    a = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    b = _moved(a)
    b[1].running_mean.fill_(2.0)
    b[1].num_batches_tracked.fill_(7)
    before_a, before_b = copy.deepcopy(a.state_dict()), copy.deepcopy(b.state_dict())
    mixed = transfer.wise_ft(a, b, 0.25)
    assert torch.allclose(mixed[1].running_mean, torch.full((4,), 0.5))
    assert mixed[1].num_batches_tracked == 7, "integer buffers are taken from the tuned model"
    for model, before in ((a, before_a), (b, before_b)):
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_wise_ft_rejects_alpha_outside_the_segment(alpha):
    with pytest.raises(ValueError, match="0 <= alpha <= 1"):
        transfer.wise_ft(_conv4(), _conv4(), alpha)


def test_wise_ft_rejects_two_architectures():
    with pytest.raises(ValueError, match="same architecture"):
        transfer.wise_ft(_conv4(out=4), _conv4(out=5), 0.5)


def test_lora_starts_as_the_pretrained_model_and_trains_only_factors_and_head():
    model = _conv4()
    x = torch.rand(5, 1, 16, 16)
    before = model(x)
    adapted = transfer.add_lora(copy.deepcopy(model), rank=2)
    torch.testing.assert_close(adapted(x), before, rtol=0, atol=0)
    trainable = sorted(n for n, p in adapted.named_parameters() if p.requires_grad)
    assert trainable == sorted([f"block{i}.0.{f}" for i in range(1, 5) for f in "AB"]
                               + ["head.weight", "head.bias"])


def test_lora_counts_r_times_out_plus_fan_in_per_layer():
    model = transfer.add_lora(_conv4(out=4, hidden=8), rank=3)
    fan_ins = [1 * 9, 8 * 9, 8 * 9, 8 * 9]
    expected = sum(3 * (8 + f) for f in fan_ins) + model.head.weight.numel() + model.head.bias.numel()
    assert models.count_parameters(model, trainable_only=True) == expected


def test_lora_update_has_at_most_the_chosen_rank_and_training_moves_only_it():
    model = _conv4()
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    adapted = transfer.add_lora(copy.deepcopy(model), rank=2)
    data = _images()
    training.fit(adapted, data, lr=1e-2, num_epochs=3, batch_size=8, seed=0)
    for i in range(1, 5):
        wrapper = adapted.get_submodule(f"block{i}.0")
        delta = wrapper.delta().flatten(1)
        assert delta.abs().max() > 0, "training should move the low-rank factors"
        assert torch.linalg.matrix_rank(delta) <= 2
        assert torch.equal(wrapper.layer.weight, original[f"block{i}.0.weight"]), "W itself stays frozen"


def test_merged_lora_computes_the_same_function():
    adapted = transfer.add_lora(_conv4(), rank=2)
    with torch.no_grad():
        for module in adapted.modules():
            if isinstance(module, transfer.LoRA):
                module.B.normal_()
    x = torch.rand(4, 1, 16, 16)
    expected = adapted(x)
    merged = transfer.merge_lora(copy.deepcopy(adapted))
    assert not any(isinstance(m, transfer.LoRA) for m in merged.modules())
    torch.testing.assert_close(merged(x), expected, rtol=1e-5, atol=1e-5)


def test_lora_of_a_linear_layer_matches_the_dense_formula():
    layer = nn.Linear(6, 4)
    lora = transfer.LoRA(layer, rank=2, alpha=4.0)
    with torch.no_grad():
        lora.B.normal_()
    x = torch.randn(3, 6)
    expected = x @ (layer.weight + 2.0 * lora.B @ lora.A).T + layer.bias
    torch.testing.assert_close(lora(x), expected)


def test_lora_rejects_bad_rank_and_layers():
    with pytest.raises(ValueError, match="rank must be an int from 1 to 4"):
        transfer.LoRA(nn.Linear(6, 4), rank=5)
    with pytest.raises(ValueError, match="nn.Conv2d or nn.Linear"):
        transfer.LoRA(nn.GroupNorm(2, 4), rank=1)
