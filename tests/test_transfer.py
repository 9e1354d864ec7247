"""Tests of mtl_course.transfer: freezing, layer-wise rates, LP-FT, surgical tuning, CKA, source cache."""
from __future__ import annotations

import copy

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

from mtl_course import models, runtime, transfer
from mtl_course.data import LabelledSet

matplotlib.use("Agg")

CONV4_LAYERS = ["block1", "block2", "block3", "block4", "head"]


def _images(n_classes: int = 4, per_class: int = 6, size: int = 16, seed: int = 0) -> LabelledSet:
    """A tiny image set in which each class has its own mean pattern."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n_classes, 1, size, size, generator=g)
    y = torch.arange(n_classes).repeat_interleave(per_class)
    X = (means[y] + 0.1 * torch.randn(len(y), 1, size, size, generator=g)).clamp(0, 1)
    return LabelledSet(X, y, [f"c{i}" for i in range(n_classes)])


def _conv4(out: int = 4, hidden: int = 4) -> models.Conv4:
    runtime.seed_everything(0)
    return models.Conv4(1, hidden, out, image_size=16)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _changed_layers(model: nn.Module, before: dict[str, torch.Tensor]) -> set[str]:
    """The top-level blocks (or head) whose parameters differ from ``before``."""
    changed = set()
    for name, p in model.named_parameters():
        if not torch.equal(p.detach(), before[name]):
            changed.add(name.rsplit(".", 1)[0] if name.startswith("body.") else name.split(".")[0])
    return changed


# --------------------------------------------------------------------------------------
# Blocks and freezing
# --------------------------------------------------------------------------------------

def test_blocks_of_conv4_and_mlp():
    assert transfer.layer_names(_conv4()) == CONV4_LAYERS
    mlp = models.MLP(8, (16, 12), 3)
    assert [n for n, _ in transfer.blocks_of(mlp)] == ["body.1", "body.3"]
    assert transfer.layer_names(mlp) == ["body.1", "body.3", "head"]
    assert transfer.blocks_of(mlp)[1][1] is mlp.body[3]
    with pytest.raises(ValueError, match="cannot find the blocks"):
        transfer.blocks_of(nn.Linear(3, 2))


def test_unknown_block_names_are_rejected():
    with pytest.raises(ValueError, match=r"unknown block\(s\) \['block9'\]"):
        transfer.freeze(_conv4(), ["block9"])
    with pytest.raises(ValueError, match="no `head`"):
        transfer.reinit_head(models.Conv4(1, 4, None, image_size=16))


def test_frozen_parameters_receive_no_update():
    data = _images()
    model = _conv4()
    transfer.freeze(model, ["block1", "block2"])
    assert transfer.trainable_layers(model) == ["block3", "block4", "head"]
    before = _snapshot(model)
    transfer.fit_layerwise(model, data, lr=1e-2, num_epochs=2, batch_size=8)
    assert _changed_layers(model, before) == {"block3", "block4", "head"}
    for p in model.block1.parameters():
        assert p.grad is None, "a frozen parameter must not even get a gradient"


def test_linear_probe_changes_only_the_head_and_cached_features_change_nothing():
    data, val = _images(), _images(seed=1)
    base = _conv4(out=7)
    cached, direct = copy.deepcopy(base), copy.deepcopy(base)
    before = _snapshot(base)
    for model, cache in ((cached, True), (direct, False)):
        runtime.seed_everything(1)
        history = transfer.linear_probe(model, data, val, num_classes=4, lr=1e-2, num_epochs=3, batch_size=8,
                                        cache_features=cache)
        assert len(history.val_metric) == 3
        assert model.head.out_features == 4
        assert _changed_layers(model, before) <= {"head"}
        body = {k: v for k, v in _snapshot(model).items() if not k.startswith("head")}
        assert all(torch.equal(v, before[k]) for k, v in body.items()), "the body must stay exactly as it was"
    # training the head on stored features is the same computation as training through the frozen body
    assert torch.allclose(cached.head.weight, direct.head.weight, atol=1e-5)
    assert torch.allclose(cached.head.bias, direct.head.bias, atol=1e-5)


def test_reinit_head():
    model = _conv4(out=5)
    body_before = {k: v for k, v in _snapshot(model).items() if not k.startswith("head")}
    head_before = model.head.weight.detach().clone()
    transfer.reinit_head(model)
    assert model.head.weight.shape == head_before.shape and not torch.equal(model.head.weight, head_before)
    transfer.reinit_head(model, 9)
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 9)
    assert all(torch.equal(p, body_before[k]) for k, p in model.named_parameters() if not k.startswith("head"))
    with pytest.raises(ValueError, match="positive int"):
        transfer.reinit_head(model, 0)


# --------------------------------------------------------------------------------------
# Layer-wise (discriminative) learning rates
# --------------------------------------------------------------------------------------

def test_discriminative_lrs_exact_values():
    lr = 0.01
    rates = transfer.discriminative_lrs(_conv4(), lr)
    assert list(rates) == CONV4_LAYERS
    expected = {"head": 0.01, "block4": 0.01 / 2.6, "block3": 0.01 / 2.6**2, "block2": 0.01 / 2.6**3,
                "block1": 0.01 / 2.6**4}
    for name, value in expected.items():
        assert rates[name] == pytest.approx(value, rel=1e-12)
    assert rates["block3"] / rates["block2"] == pytest.approx(2.6)
    mlp_rates = transfer.discriminative_lrs(models.MLP(4, (8, 8), 2), 1.0, factor=2.0)
    assert mlp_rates == {"body.1": 0.25, "body.3": 0.5, "head": 1.0}
    assert set(transfer.discriminative_lrs(_conv4(), 0.1, factor=1.0).values()) == {0.1}
    with pytest.raises(ValueError, match="factor must be >= 1"):
        transfer.discriminative_lrs(_conv4(), 0.1, factor=0.5)
    with pytest.raises(ValueError, match="lr must be positive"):
        transfer.discriminative_lrs(_conv4(), 0.0)


def test_param_groups_cover_each_block_with_its_rate():
    model = _conv4()
    groups = transfer.layerwise_param_groups(model, 0.01, transfer.ULMFIT_FACTOR)
    assert [g["name"] for g in groups] == CONV4_LAYERS
    for g in groups:
        assert {id(p) for p in g["params"]} == {id(p) for p in model.get_submodule(g["name"]).parameters()}
        assert g["lr"] == pytest.approx(0.01 / 2.6 ** (4 - CONV4_LAYERS.index(g["name"])))
    transfer.freeze(model, ["block1", "block4"])
    assert [g["name"] for g in transfer.layerwise_param_groups(model, 0.01)] == ["block2", "block3", "head"]


def test_first_adam_step_moves_each_block_by_its_own_rate():
    """Adam's first step is lr * g / (|g| + eps): about lr for every weight with a clear gradient."""
    torch.manual_seed(0)
    model = models.MLP(6, (32, 32), 3)
    X, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    before = _snapshot(model)
    transfer.fine_tune(model, (X, y), lr=1e-3, factor=transfer.ULMFIT_FACTOR, num_epochs=1, batch_size=64)
    rates = transfer.discriminative_lrs(model, 1e-3)
    for name, layer in (("body.1", model.body[1]), ("body.3", model.body[3]), ("head", model.head)):
        step = (layer.weight.detach() - before[f"{name}.weight"]).abs()
        assert step.max().item() == pytest.approx(rates[name], rel=1e-3), name


# --------------------------------------------------------------------------------------
# LP-FT, surgical fine-tuning, gradual unfreezing
# --------------------------------------------------------------------------------------

def test_lp_ft_second_phase_starts_from_the_probed_head(monkeypatch):
    data = _images()
    model = _conv4(out=7)
    body_before = {k: v for k, v in _snapshot(model).items() if not k.startswith("head")}
    seen = {}
    real_probe, real_tune = transfer.linear_probe, transfer.fine_tune

    def probe(m, *args, **kwargs):
        history = real_probe(m, *args, **kwargs)
        seen["probed_head"] = {k: v.detach().clone() for k, v in m.head.state_dict().items()}
        return history

    def tune(m, *args, **kwargs):
        seen["head_at_ft_start"] = {k: v.detach().clone() for k, v in m.head.state_dict().items()}
        seen["body_at_ft_start"] = {k: v for k, v in _snapshot(m).items() if not k.startswith("head")}
        return real_tune(m, *args, **kwargs)

    monkeypatch.setattr(transfer, "linear_probe", probe)
    monkeypatch.setattr(transfer, "fine_tune", tune)
    lp, ft = transfer.lp_ft(model, data, _images(seed=1), num_classes=4, lp_epochs=3, ft_epochs=2, batch_size=8)
    assert len(lp.val_metric) == 3 and len(ft.val_metric) == 2
    for k, v in seen["probed_head"].items():
        assert torch.equal(seen["head_at_ft_start"][k], v), "phase 2 must start from the probed head"
    for k, v in body_before.items():
        assert torch.equal(seen["body_at_ft_start"][k], v), "phase 1 must not change the body"
    assert _changed_layers(model, {**body_before, **{f"head.{k}": v for k, v in seen["probed_head"].items()}}) == set(
        CONV4_LAYERS), "phase 2 fine-tunes every block"


@pytest.mark.parametrize("block", ["block1", "block3", "head"])
def test_surgical_fine_tuning_touches_only_the_chosen_block(block):
    model = _conv4()
    before = _snapshot(model)
    transfer.surgical_fine_tune(model, _images(), block=block, lr=1e-2, num_epochs=2, batch_size=8)
    assert _changed_layers(model, before) == {block}
    assert transfer.trainable_layers(model) == [block]


def test_gradual_unfreezing_order(monkeypatch):
    model = _conv4()
    assert transfer.unfreezing_schedule(model) == [
        ["head"], ["block4", "head"], ["block3", "block4", "head"], ["block2", "block3", "block4", "head"],
        CONV4_LAYERS]
    trainable_per_call, changed_per_call = [], []
    real_fit = transfer.fit_layerwise

    def recording_fit(m, *args, **kwargs):
        trainable_per_call.append(transfer.trainable_layers(m))
        before = _snapshot(m)
        history = real_fit(m, *args, **kwargs)
        changed_per_call.append(_changed_layers(m, before))
        return history

    monkeypatch.setattr(transfer, "fit_layerwise", recording_fit)
    stages = transfer.gradual_unfreezing(model, _images(), lr=1e-2, epochs_per_stage=1, final_epochs=2,
                                         batch_size=8)
    assert trainable_per_call == transfer.unfreezing_schedule(model)
    assert [set(s) for s in trainable_per_call] == changed_per_call, "each stage trains exactly its blocks"
    assert [s.trainable for s in stages] == trainable_per_call
    assert [len(s.history.train_loss) for s in stages] == [1, 1, 1, 1, 2]
    with pytest.raises(ValueError, match="epochs_per_stage"):
        transfer.gradual_unfreezing(model, _images(), num_epochs=3)


# --------------------------------------------------------------------------------------
# Linear CKA and feature alignment
# --------------------------------------------------------------------------------------

def _cka_by_kernels(X: np.ndarray, Y: np.ndarray) -> float:
    """CKA as normalised HSIC of the linear kernels (Kornblith et al., 2019, Eq. 3), an independent formula."""
    n = len(X)
    H = np.eye(n) - np.ones((n, n)) / n
    K, L = H @ X @ X.T @ H, H @ Y @ Y.T @ H
    return float(np.sum(K * L) / np.sqrt(np.sum(K * K) * np.sum(L * L)))


def test_linear_cka_properties():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 8))
    Y = X @ rng.normal(size=(8, 5)) + 0.5 * rng.normal(size=(50, 5))
    assert transfer.linear_cka(X, X) == pytest.approx(1.0, abs=1e-12)
    Q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    base = transfer.linear_cka(X, Y)
    assert transfer.linear_cka(X @ Q, Y) == pytest.approx(base, abs=1e-12), "invariant to orthogonal transforms"
    assert transfer.linear_cka(3.7 * X, Y) == pytest.approx(base, abs=1e-12), "invariant to isotropic scaling"
    assert transfer.linear_cka(X + 5.0, Y) == pytest.approx(base, abs=1e-12), "features are centred"
    assert base == pytest.approx(_cka_by_kernels(X, Y), abs=1e-12)
    assert 0.0 < base < 1.0
    stretched = X * np.array([10.0] + [1.0] * 7)
    assert abs(transfer.linear_cka(stretched, Y) - base) > 1e-3, "not invariant to anisotropic scaling"
    assert transfer.linear_cka(torch.tensor(X), torch.tensor(Y)) == pytest.approx(base, abs=1e-6)
    with pytest.raises(ValueError, match="same examples"):
        transfer.linear_cka(X, Y[:10])
    with pytest.raises(ValueError, match="constant representation"):
        transfer.linear_cka(np.ones((5, 3)), Y[:5])


def test_feature_cka_of_a_model_with_itself_is_one():
    model, X = _conv4(), _images().X
    assert transfer.feature_cka(model, copy.deepcopy(model), X) == pytest.approx(1.0, abs=1e-9)


def test_align_features_matches_source_statistics():
    g = torch.Generator().manual_seed(0)
    source = torch.randn(200, 6, generator=g) * 2 + 1
    target = torch.randn(100, 6, generator=g) * 0.3 - 4
    aligned = transfer.align_features(target, source)
    assert torch.allclose(aligned.mean(0), source.mean(0), atol=1e-4)
    assert torch.allclose(aligned.std(0), source.std(0), atol=1e-3)
    with pytest.raises(ValueError, match="align_features needs"):
        transfer.align_features(target, source[:, :3])


# --------------------------------------------------------------------------------------
# The cached source model
# --------------------------------------------------------------------------------------

def test_source_model_cache_round_trip(monkeypatch, tmp_path):
    monkeypatch.setenv("MTL_COURSE_DATA", str(tmp_path))
    data = _images(n_classes=6, per_class=6)
    config = transfer.SourceConfig(hidden=4, train_drawings=4, val_drawings=2, num_epochs=1, batch_size=8)
    classes = [0, 2, 3, 5]
    first = transfer.source_model(config, data=data, classes=classes, device=torch.device("cpu"))
    assert not first.from_cache and first.path.is_file()
    assert first.path.parent == tmp_path / "models"
    for setting in ("h4", "d4+2", "e1", "b8", "s0"):
        assert setting in first.path.name, f"the file name should encode {setting}"
    assert [p.name for p in first.path.parent.iterdir()] == [first.path.name], "no temporary file is left behind"
    second = transfer.source_model(config, data=data, classes=classes, device=torch.device("cpu"))
    assert second.from_cache and second.path == first.path
    assert second.val_accuracy == first.val_accuracy and second.classes == classes
    for (k, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), f"{k} differs after the round trip"
    other = transfer.source_model(transfer.SourceConfig(hidden=4, train_drawings=4, val_drawings=2, num_epochs=2,
                                                        batch_size=8), data=data, classes=classes)
    assert other.path != first.path and not other.from_cache
    first.path.write_bytes(b"not a checkpoint")
    again = transfer.source_model(config, data=data, classes=classes, device=torch.device("cpu"))
    assert not again.from_cache, "an unreadable cache file is trained again"
    assert torch.equal(again.model.head.weight, first.model.head.weight), "same settings, same weights"


def test_source_model_path_names_data_and_compute(monkeypatch, tmp_path):
    monkeypatch.setenv("MTL_COURSE_DATA", str(tmp_path))
    for name in (*runtime.ROUNDING_VARIABLES, runtime.SEED_OFFSET_VARIABLE):  # the names' other parts
        monkeypatch.delenv(name, raising=False)
    config = transfer.SourceConfig(hidden=4, train_drawings=4, val_drawings=2)
    one, other = _images(seed=0), _images(seed=1)
    cpu = torch.device("cpu")
    assert transfer.source_model_path(config, one, cpu) != transfer.source_model_path(config, other, cpu)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = transfer.source_model_path(config, one, cpu)
        torch.set_num_threads(2)
        double = transfer.source_model_path(config, one, cpu)
    finally:
        torch.set_num_threads(threads)
    assert single.name.endswith("-cpu1t.pt") and double.name.endswith("-cpu2t.pt")


def test_source_config_validation():
    with pytest.raises(ValueError, match="hidden"):
        transfer.SourceConfig(hidden=0)
    with pytest.raises(ValueError, match="lr must be positive"):
        transfer.SourceConfig(lr=0.0)
    with pytest.raises(ValueError, match="max_classes"):
        transfer.SourceConfig(max_classes=1)
    with pytest.raises(ValueError, match="fewer than"):
        transfer.source_model(transfer.SourceConfig(hidden=4, train_drawings=5, val_drawings=2),
                              data=_images(per_class=6), classes=[0, 1])


# --------------------------------------------------------------------------------------
# ResNet-18 in block form (random weights: no download) and the plots
# --------------------------------------------------------------------------------------

def test_resnet18_backbone_has_the_block_shape():
    pytest.importorskip("torchvision")
    runtime.seed_everything(0)
    net = models.resnet18_backbone(5, pretrained=False, image_size=32)
    assert transfer.layer_names(net) == CONV4_LAYERS and net.feature_dim == 512
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 5)
    before = _snapshot(net)
    transfer.surgical_fine_tune(net, (torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])), block="block4",
                                num_epochs=1, batch_size=4)
    assert _changed_layers(net, before) == {"block4"}


def test_resnet18_lp_ft_runs_both_phases_without_a_download(monkeypatch):
    """The logic of the chapter's ImageNet example, with random weights (weights=None: nothing is downloaded)."""
    pytest.importorskip("torchvision")
    import torchvision.models

    calls = []
    original = torchvision.models.resnet18
    monkeypatch.setattr(torchvision.models, "resnet18",
                        lambda weights=None: calls.append(weights) or original(weights=weights))
    runtime.seed_everything(0)
    data = _images(n_classes=3, per_class=4)
    model, probe, tune = transfer.resnet18_lp_ft(data, data, 3, pretrained=False, image_size=32, lp_epochs=2,
                                                 ft_epochs=1, batch_size=6, device="cpu")
    assert calls == [None], "pretrained=False must build the network with weights=None"
    assert isinstance(model, models.BlockBackbone) and model.head.out_features == 3
    assert len(probe.val_metric) == 2 and len(tune.val_metric) == 1, "a probing phase, then a fine-tuning phase"
    assert all(p.requires_grad for p in model.parameters()), "the fine-tuning phase trains every block"
    assert model(data.X[:2]).shape == (2, 3)


def test_resnet18_without_internet_says_what_to_do(monkeypatch):
    pytest.importorskip("torchvision")
    import urllib.error

    import torchvision.models

    def offline(weights=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models, "resnet18", offline)
    with pytest.raises(models.WeightsUnavailableError, match="full"):
        transfer.resnet18_lp_ft(_images(), _images(), 4, pretrained=True, device="cpu")
