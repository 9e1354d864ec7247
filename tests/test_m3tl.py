"""Tests of mtl_course.m3tl: configuration, the network, and the reductions of Fig. 8.

Each reduction is checked against the standalone module of its chapter on
the same data and seed: the MTL reduction against ``multitask.HardSharing`` +
``fit_multitask``, the meta-learning reduction against ``meta.meta_train``
on a plain Conv-4, the transfer reduction against ``transfer.linear_probe``
and ``transfer.fine_tune`` on the pre-trained model itself. Equal parameters
and losses (to float tolerance) show that M3TL composes those modules.
"""
from __future__ import annotations

import copy

import matplotlib
import pytest
import torch
from torch import nn

from mtl_course import m3tl, meta, models, transfer
from mtl_course import multitask as mt
from mtl_course.data import Episode, EpisodeSampler, LabelledSet
from mtl_course.data.multimodal import MultiModalSet, TaskEpisodes
from mtl_course.models import functional_forward, params_of

matplotlib.use("Agg")

SIZE = 16


def _data(n_classes: int = 4, per_class: int = 8, seed: int = 0) -> MultiModalSet:
    """A tiny two-modality set: a noisy class pattern image and a noisy class profile, five tasks."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n_classes, 1, SIZE, SIZE, generator=g)
    codes = torch.randn(n_classes, 6, generator=g)
    y = torch.arange(n_classes).repeat_interleave(per_class)
    n = len(y)
    image = (means[y] + 0.2 * torch.randn(n, 1, SIZE, SIZE, generator=g)).clamp(0, 1)
    profile = codes[y] + 0.3 * torch.randn(n, 6, generator=g)
    targets = {"character": y, "alphabet": y % 2, "angle": torch.rand(n, generator=g) * 2 - 1,
               "zoom": torch.rand(n, generator=g) * 2 - 1, "upright": means[y]}
    kinds = {"character": "classification", "alphabet": "classification", "angle": "regression",
             "zoom": "regression", "upright": "dense"}
    return MultiModalSet({"image": image, "profile": profile}, targets, kinds, y, y % 2,
                         torch.arange(per_class).repeat(n_classes), [f"c{i}" for i in range(n_classes)],
                         ["a0", "a1"])


def _pretrained(hidden: int = 4, seed: int = 0) -> models.Conv4:
    torch.manual_seed(seed)
    return models.Conv4(1, hidden, 3, image_size=SIZE)


def _tasks() -> list:
    return [m3tl.task("character", "classification", 4), m3tl.task("angle", "regression")]


def _close(a: nn.Module, b: nn.Module, atol: float = 1e-6) -> None:
    pa = [p.detach() for p in a.parameters()]
    pb = [p.detach() for p in b.parameters()]
    assert len(pa) == len(pb)
    for x, y in zip(pa, pb):
        assert torch.allclose(x, y, atol=atol), (x - y).abs().max()


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------

def test_reductions_switch_off_the_parts_of_fig8():
    data = _data()
    full = m3tl.M3TLConfig(data.modality_shapes, {"image": m3tl.EncoderSpec("frozen", pretrained=_pretrained()),
                                                  "profile": m3tl.EncoderSpec()}, _tasks())
    assert (full.fusion, full.backbone, full.meta, full.unseen_tasks) == (True, True, True, True)
    mtl = m3tl.reduce(full, "mtl")
    assert (mtl.fusion, mtl.backbone, mtl.meta, mtl.unseen_tasks) == (True, True, False, False)
    assert not mtl.is_on("pretrained") and mtl.encoders["image"].arch == "conv4"
    tl = m3tl.reduce(full, "transfer")
    assert (tl.backbone, tl.meta, tl.fusion) == (False, False, True) and tl.is_on("pretrained")
    with pytest.raises(ValueError, match="one modality"):
        m3tl.reduce(full, "meta")
    ml = m3tl.reduce(m3tl.with_modalities(full, ["image"]), "meta")
    assert (ml.fusion, ml.backbone, ml.meta, ml.unseen_tasks) == (False, False, True, True)
    for name, config in {"mtl": mtl, "transfer": tl, "meta": ml}.items():
        off = {p for p in m3tl.SWITCHES if not config.is_on(p)}
        assert off == set(m3tl.SWITCHED_OFF[name]) - ({"fusion"} if name == "transfer" else set())


def test_bad_configurations_are_explained():
    data = _data()
    shapes, pre = data.modality_shapes, _pretrained()
    with pytest.raises(ValueError, match="unknown modality 'audio'"):
        m3tl.M3TLConfig(shapes, {"audio": m3tl.EncoderSpec()}, _tasks())
    with pytest.raises(ValueError, match="unknown task kind"):
        m3tl.task("colour", "ranking")
    with pytest.raises(ValueError, match="kind must be one of"):
        mt.TaskSpec("colour", "ranking", 1)
    with pytest.raises(ValueError, match="switches off meta"):
        m3tl.M3TLConfig(shapes, {"profile": m3tl.EncoderSpec()}, _tasks(), reduction="mtl", meta=True)
    with pytest.raises(ValueError, match="switches off backbone"):
        m3tl.M3TLConfig(shapes, {"image": m3tl.EncoderSpec("frozen", pretrained=pre)}, _tasks(), reduction="transfer",
                        backbone=True)
    with pytest.raises(ValueError, match="no pre-trained encoders"):
        m3tl.M3TLConfig(shapes, {"image": m3tl.EncoderSpec("finetune", pretrained=pre)}, _tasks(), reduction="meta")
    with pytest.raises(ValueError, match="needs at least one pre-trained"):
        m3tl.M3TLConfig(shapes, {"profile": m3tl.EncoderSpec()}, _tasks(), reduction="transfer")
    with pytest.raises(ValueError, match="meta=False contradicts"):
        m3tl.M3TLConfig(shapes, {"profile": m3tl.EncoderSpec()}, _tasks(), reduction="meta", meta=False)
    with pytest.raises(ValueError, match="reads one modality"):
        m3tl.M3TLConfig(shapes, {"image": m3tl.EncoderSpec(), "profile": m3tl.EncoderSpec()}, _tasks(), fusion=False)
    with pytest.raises(ValueError, match="needs a pretrained model"):
        m3tl.EncoderSpec("frozen")
    with pytest.raises(ValueError, match="takes no pretrained"):
        m3tl.EncoderSpec("scratch", pretrained=pre)
    with pytest.raises(ValueError, match="encoder mode"):
        m3tl.EncoderSpec("melted")
    with pytest.raises(ValueError, match="reduction must be one of"):
        m3tl.M3TLConfig(shapes, {"profile": m3tl.EncoderSpec()}, _tasks(), reduction="everything")
    mtl_net = m3tl.build(m3tl.M3TLConfig(shapes, {"profile": m3tl.EncoderSpec()}, _tasks(), reduction="mtl"))
    with pytest.raises(ValueError, match="adds no unseen tasks"):
        mtl_net.add_task(m3tl.task("zoom", "regression"))
    with pytest.raises(ValueError, match="no meta-optimisation"):
        m3tl.meta_train(mtl_net, {"angle": lambda: []}, outer_steps=1)
    net = m3tl.build(m3tl.M3TLConfig(shapes, {"profile": m3tl.EncoderSpec()}, _tasks()))
    with pytest.raises(ValueError, match="single-level training of the MTL reduction"):
        m3tl.fit_joint(net, data)
    with pytest.raises(ValueError, match="no head for task 'zoom'"):
        net.task_net("zoom")
    with pytest.raises(ValueError, match="unknown part"):
        net.task_net("angle").keys("neck")
    with pytest.raises(ValueError, match="expected packed inputs"):
        net(data.packed())
    with pytest.raises(ValueError, match="already has a head"):
        net.add_task(m3tl.task("angle", "regression"))


# --------------------------------------------------------------------------------------
# The network and its one-task view
# --------------------------------------------------------------------------------------

def _full_net(seed: int = 0) -> tuple[m3tl.M3TLNet, MultiModalSet]:
    data = _data()
    config = m3tl.M3TLConfig(data.modality_shapes, {"image": m3tl.EncoderSpec("frozen", pretrained=_pretrained()),
                                                    "profile": m3tl.EncoderSpec(hidden=(8,))}, _tasks(),
                             embed_dim=8, backbone_sizes=(8,))
    return m3tl.build(config, seed=seed), data


def test_network_outputs_every_head_and_freezes_frozen_encoders():
    net, data = _full_net()
    out = net(data.packed())
    assert out["character"].shape == (len(data), 4) and out["angle"].shape == (len(data),)
    assert not any(p.requires_grad for p in net.encoders["image"].parameters())
    assert all(p.requires_grad for p in net.encoders["profile"].parameters())
    view = net.task_net("angle")
    assert torch.equal(view(data.packed()), out["angle"])
    assert set(view.parts.values()) == {"encoder:image", "encoder:profile", "fusion", "backbone"}
    assert view.keys("encoder:image") == []  # frozen
    assert view.keys("encoder:image", trainable_only=False)
    assert all(view.part_of(k) == "head" for k in view.keys("head"))
    assert set(view.keys("all")) == set(params_of(view))
    assert m3tl.part_names(net) == ["encoder:image", "encoder:profile", "fusion", "backbone", "head"]


def test_functional_forward_of_the_view_uses_the_given_parameters():
    net, data = _full_net()
    view = net.task_net("character")
    params = {k: v + 0.1 for k, v in params_of(view).items()}
    out = functional_forward(view, params, data.packed())
    twin = copy.deepcopy(net)
    with torch.no_grad():
        for (name, p), (_, q) in zip(net.named_parameters(), twin.named_parameters()):
            if p.requires_grad:
                q.add_(0.1)
    assert torch.allclose(out, twin(data.packed())["character"], atol=1e-6)
    assert not torch.allclose(out, view(data.packed()))


def test_cached_frozen_features_give_the_same_outputs_and_share_the_weights():
    net, data = _full_net()
    cached, cached_data = m3tl.cache_frozen_features(net, data)
    assert cached_data.modality_shapes["image"] == (net.encoders["image"].feature_dim,)
    a, b = net(data.packed()), cached(cached_data.packed())
    for t in a:
        assert torch.allclose(a[t], b[t], atol=1e-5)
    cached.add_task(m3tl.task("zoom", "regression"), seed=0)
    assert "zoom" in net.heads and net.heads["zoom"] is cached.heads["zoom"]


def test_add_task_gives_a_head_of_the_new_kind():
    net, data = _full_net()
    view = net.add_task(m3tl.task("upright", "dense", (1, SIZE, SIZE)), seed=0)
    assert view(data.packed()).shape == (len(data), 1, SIZE, SIZE)
    again, _ = _full_net()
    again.add_task(m3tl.task("upright", "dense", (1, SIZE, SIZE)), seed=0)
    _close(net.heads["upright"], again.heads["upright"])


# --------------------------------------------------------------------------------------
# The three reductions reproduce the standalone modules
# --------------------------------------------------------------------------------------

def test_mtl_reduction_equals_hard_sharing_with_fit_multitask():
    data = _data()
    tasks = _tasks() + [m3tl.task("upright", "dense", (1, SIZE, SIZE))]
    config = m3tl.M3TLConfig({"profile": (6,)}, {"profile": m3tl.EncoderSpec(hidden=(16,))}, tasks, reduction="mtl",
                             embed_dim=12, backbone_sizes=(10,))
    net = m3tl.build(config, seed=3)
    hist = m3tl.fit_joint(net, data, num_epochs=3, lr=1e-2, batch_size=8, seed=1)

    torch.manual_seed(3)  # the standalone model of Chapter 3, built layer by layer in the same order
    trunk = nn.Sequential(models.MLP(6, (16,), None), nn.Linear(16, 12), nn.ReLU(), models.MLP(12, (10,), None))
    heads = {t.name: mt.make_head(t.kind, 10, t.out) for t in tasks}
    ref = mt.HardSharing(trunk, heads)
    ref_data = mt.MultiTaskSet(data.packed(["profile"]), {t.name: data.targets[t.name] for t in tasks},
                               {t.name: t for t in tasks})
    ref_hist = mt.fit_multitask(ref, ref_data, num_epochs=3, lr=1e-2, batch_size=8, seed=1)
    assert torch.allclose(torch.tensor(hist.train_loss), torch.tensor(ref_hist.train_loss), atol=1e-6)
    _close(net, ref)


def _conv_episodes(data: MultiModalSet, n: int, seed: int) -> list[Episode]:
    return EpisodeSampler(data.labelled_set(["image"]), n_way=3, k_shot=2, q_queries=3, seed=seed).batch(n)


def test_meta_reduction_equals_meta_train_on_a_conv4():
    data = _data()
    spec = m3tl.task("character", "classification", 3)
    config = m3tl.M3TLConfig(data.modality_shapes, {"image": m3tl.EncoderSpec(arch="conv4", hidden=4)}, [spec],
                             reduction="meta")
    net = m3tl.build(config, seed=5)
    sampler = EpisodeSampler(data.labelled_set(["image"]), n_way=3, k_shot=2, q_queries=3, seed=0)
    hist = m3tl.meta_train(net, {"character": lambda: sampler.batch(2)}, outer_steps=3, meta_lr=1e-2,
                           inner=meta.InnerLoop(lr=0.3, steps=2))

    torch.manual_seed(5)
    ref = models.Conv4(1, 4, 3, image_size=SIZE)  # Chapter 4's MAML network
    ref_sampler = EpisodeSampler(LabelledSet(data.inputs["image"], data.classes, data.class_names), n_way=3,
                                 k_shot=2, q_queries=3, seed=0)
    ref_hist = meta.meta_train(ref, lambda: ref_sampler.batch(2), method="maml", outer_steps=3, meta_lr=1e-2,
                               inner=meta.InnerLoop(lr=0.3, steps=2), metric=None)
    assert hist.loss == pytest.approx(ref_hist.loss, abs=1e-6)
    _close(net, ref, atol=1e-5)
    test = _conv_episodes(data, 4, seed=9)
    ours = m3tl.meta_test(net, "character", test, parts="all", inner_lr=0.3, inner_steps=2)
    ref_test = [Episode(e.support_X.view(-1, 1, SIZE, SIZE), e.support_y, e.query_X.view(-1, 1, SIZE, SIZE),
                        e.query_y) for e in test]
    theirs = meta.evaluate_episodes(ref, ref_test, method="maml", inner=meta.InnerLoop(lr=0.3, steps=2))
    assert ours.mean == pytest.approx(theirs.mean, abs=1e-6)


@pytest.mark.parametrize("mode", ["frozen", "finetune"])
def test_transfer_reduction_equals_linear_probe_and_fine_tune(mode):
    data = _data()
    pre = _pretrained()
    spec = m3tl.task("character", "classification", 4)
    config = m3tl.M3TLConfig(data.modality_shapes, {"image": m3tl.EncoderSpec(mode, pretrained=pre)}, [spec],
                             reduction="transfer")
    net = m3tl.build(config, seed=7)
    train, val = data.subset(torch.arange(0, 32, 2)), data.subset(torch.arange(1, 32, 2))
    hist = m3tl.fit_task(net, "character", train, val, lr=1e-2, num_epochs=3, batch_size=8, seed=2)

    ref = copy.deepcopy(pre)
    kwargs = dict(lr=1e-2, num_epochs=3, batch_size=8, seed=2)
    ref_train = (train.inputs["image"], train.targets["character"])
    ref_val = (val.inputs["image"], val.targets["character"])
    torch.manual_seed(7)  # the new head is drawn as build() drew it
    if mode == "frozen":
        ref_hist = transfer.linear_probe(ref, ref_train, ref_val, num_classes=4, **kwargs)
    else:
        models.replace_head(ref, 4)
        ref_hist = transfer.fine_tune(ref, ref_train, ref_val, **kwargs)
    assert hist.train_loss == pytest.approx(ref_hist.train_loss, abs=1e-6)
    assert hist.val_metric == pytest.approx(ref_hist.val_metric, abs=1e-6)
    _close(nn.ModuleList([*net.encoders["image"].blocks, net.heads["character"]]),
           nn.ModuleList([*ref.blocks, ref.head]), atol=1e-5)
    assert {p.requires_grad for p in net.encoders["image"].parameters()} == {mode == "finetune"}  # flags kept


# --------------------------------------------------------------------------------------
# Meta-training, meta-test, Fig. 7 and Q3 tools
# --------------------------------------------------------------------------------------

def test_meta_train_over_heterogeneous_tasks_and_meta_test_a_new_kind():
    net, data = _full_net()
    cached, cdata = m3tl.cache_frozen_features(net, data)
    samplers = {"character": TaskEpisodes(cdata, "character", n_way=4, k_shot=2, q_queries=3, seed=0),
                "angle": TaskEpisodes(cdata, "angle", n_way=3, k_shot=2, q_queries=3, seed=1)}
    before = copy.deepcopy(net.state_dict())
    val = {t: s.episodes(4) for t, s in samplers.items()}
    inner = {"character": meta.InnerLoop(lr=0.3), "angle": meta.InnerLoop(lr=0.1)}
    hist = m3tl.meta_train(cached, {t: (lambda s=s: s.batch(3)) for t, s in samplers.items()}, outer_steps=4,
                           meta_lr=1e-2, inner=inner, val_episodes=val, eval_every=2)
    assert len(hist.loss) == 4 and len(hist.metric[0]) == 2 and hist.best_step in (2, 4)
    moved = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("heads.angle") for k in moved) and any(k.startswith("backbone") for k in moved)
    assert not any(k.startswith("encoders.image") for k in moved)  # frozen
    cached.add_task(m3tl.task("upright", "dense", (1, SIZE, SIZE)), seed=0)
    episodes = TaskEpisodes(cdata, "upright", n_way=2, k_shot=2, q_queries=2, seed=3).episodes(4)
    head = m3tl.meta_test(cached, "upright", episodes, parts="head", inner_lr=0.5, inner_steps=3)
    everything = m3tl.meta_test(cached, "upright", episodes, parts="all", inner_lr=0.5, inner_steps=3)
    assert 0 < head.mean < 1 and 0 < everything.mean < 1 and head.mean != everything.mean
    updates = m3tl.adaptation_updates(cached, "upright", episodes, parts="all", inner_lr=0.5, inner_steps=3)
    assert set(updates) == {"encoder:profile", "fusion", "backbone", "head"}
    assert all(u.shape[0] == 4 for u in updates.values())
    only_head = m3tl.adaptation_updates(cached, "upright", episodes, parts="head", inner_lr=0.5, inner_steps=3)
    assert set(only_head) == {"head"}
    sizes = m3tl.relative_update_size(updates, cached, "upright")
    assert all(v > 0 for v in sizes.values())


def test_pairwise_cosine():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert m3tl.pairwise_cosine(a, a) == pytest.approx(0.0)
    assert m3tl.pairwise_cosine(a, torch.tensor([[1.0, 1.0]])) == pytest.approx(2 ** -0.5)
    with pytest.raises(ValueError, match="equal width"):
        m3tl.pairwise_cosine(a, torch.ones(2, 3))


@pytest.mark.parametrize("case", [1, 2])
def test_fig7_cases_feature_extractor_and_fine_tuning(case):
    net, data = _full_net()
    before = copy.deepcopy(net.state_dict())
    view, hist = m3tl.transfer_to_target(net, m3tl.task("zoom", "regression"), data, data, case=case, lr=1e-2,
                                         num_epochs=2, batch_size=8)
    moved = {k.split(".")[0] for k, v in net.state_dict().items() if k in before and not torch.equal(v, before[k])}
    assert "heads" not in moved or case == 2
    assert moved == (set() if case == 1 else {"encoders", "fusion", "backbone"})
    assert hist.val_metric and view.task == "zoom"
    assert not any(p.requires_grad for p in net.encoders["image"].parameters())  # flags restored
    assert all(p.requires_grad for p in net.backbone.parameters())
    with pytest.raises(ValueError, match="case 1"):
        m3tl.transfer_to_target(net, m3tl.task("zoom2", "regression"), data, case=3)


def test_plot_architecture_blacks_out_switched_off_parts():
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4)
    for ax, r in zip(axes, m3tl.REDUCTIONS):
        m3tl.plot_architecture(ax, r)
    black = [sum(1 for p in ax.patches if p.get_facecolor()[:3] == (0.0, 0.0, 0.0)) for ax in axes]
    assert black[0] == 0 and all(b > 0 for b in black[1:])
    plt.close(fig)
    with pytest.raises(ValueError, match="reduction must be one of"):
        m3tl.plot_architecture(axes[0], "all")


# ---------------------------------------------------------------------------
# The pre-trained single-task baseline (Chapter 8, question Q1)
# ---------------------------------------------------------------------------


def test_cache_lower_blocks_gives_the_encoders_features_through_its_top_block():
    data, encoder = _data(), _pretrained()
    top, cached = m3tl.cache_lower_blocks(encoder, data, "image", top=1)
    assert cached.inputs["image"].shape[1:] == (4, 2, 2)
    assert torch.equal(cached.inputs["profile"], data.inputs["profile"])
    with torch.no_grad():
        assert torch.allclose(top.features(cached.inputs["image"]), encoder.features(data.inputs["image"]),
                              atol=1e-6)
    assert all(p.requires_grad for p in top.parameters())
    top.blocks[0][0].weight.data.zero_()  # a copy: the encoder is untouched
    assert encoder.block4[0].weight.abs().sum() > 0
    with pytest.raises(ValueError, match="top must be"):
        m3tl.cache_lower_blocks(encoder, data, "image", top=5)
    with pytest.raises(ValueError, match="no modality"):
        m3tl.cache_lower_blocks(encoder, data, "sound")


def _baseline(kind: str = "classification", fine_tune: bool = False):
    data, encoder = _data(), _pretrained()
    spec = m3tl.task("character", "classification", 4) if kind == "classification" else m3tl.task("angle",
                                                                                                     "regression")
    encoder.requires_grad_(fine_tune)
    model = m3tl.PretrainedSingleTask(data.modality_shapes, {"image": encoder}, spec, data.packed())
    return data, model


def test_pretrained_single_task_standardises_its_features_and_starts_at_zero():
    data, model = _baseline()
    with torch.no_grad():
        z = model.features(data.packed())
        assert z.shape == (len(data), 4 + 6)
        assert torch.allclose(z.mean(0), torch.zeros(10), atol=1e-5)
        assert torch.allclose(z.std(0), torch.ones(10), atol=1e-4)
        assert torch.equal(model(data.packed()), torch.zeros(len(data), 4))
    with pytest.raises(ValueError, match="packed rows"):
        model(data.inputs["profile"])
    with pytest.raises(ValueError, match="unknown modality"):
        m3tl.PretrainedSingleTask(data.modality_shapes, {"sound": None}, model.spec, data.packed())


def test_single_task_probe_is_gradient_descent_on_the_head_alone():
    data, model = _baseline()
    episodes = TaskEpisodes(data, "character", n_way=4, k_shot=2, q_queries=3, seed=0).episodes(3)
    scores = m3tl.single_task_test(model, episodes, inner_lr=0.5, inner_steps=5)
    for episode, value in zip(episodes, scores.values):
        head = copy.deepcopy(model.head)
        with torch.no_grad():
            zs, zq = model.features(episode.support_X), model.features(episode.query_X)
        for _ in range(5):
            loss = nn.functional.cross_entropy(head(zs), episode.support_y)
            grads = torch.autograd.grad(loss, list(head.parameters()))
            with torch.no_grad():
                for p, g in zip(head.parameters(), grads):
                    p -= 0.5 * g
        expected = (head(zq).argmax(1) == episode.query_y).float().mean().item()
        assert value == pytest.approx(expected, abs=1e-6)
    assert torch.equal(model.head[0].weight, torch.zeros_like(model.head[0].weight))  # each episode starts afresh
    with pytest.raises(ValueError, match="fine-tunes the encoders"):
        m3tl.single_task_test(model, episodes, inner_lr=0.5, inner_steps=5, encoder_lr_factor=0.1)


def test_single_task_fine_tuning_moves_the_encoder_and_cached_features_match_raw_ones():
    data, model = _baseline("regression", fine_tune=True)
    episodes = TaskEpisodes(data, "angle", n_way=3, k_shot=2, q_queries=2, seed=1).episodes(4)
    probe = m3tl.single_task_test(model, episodes, inner_lr=0.05, inner_steps=5)
    tuned = m3tl.single_task_test(model, episodes, inner_lr=0.05, inner_steps=5, encoder_lr_factor=10.0)
    assert len(tuned.values) == 4 and abs(tuned.values - probe.values).max() > 1e-4
    # the same probe on features computed once, with no encoder in the model
    features = transfer.extract_features(model.encoders["image"], data.inputs["image"])
    cached = MultiModalSet({"image": features, "profile": data.inputs["profile"]}, data.targets, data.kinds,
                           data.classes, data.alphabets, data.drawings, data.class_names, data.alphabet_names)
    on_cache = m3tl.PretrainedSingleTask(cached.modality_shapes, {}, model.spec, cached.packed())
    cached_episodes = TaskEpisodes(cached, "angle", n_way=3, k_shot=2, q_queries=2, seed=1).episodes(4)
    again = m3tl.single_task_test(on_cache, cached_episodes, inner_lr=0.05, inner_steps=5)
    assert again.values == pytest.approx(probe.values, abs=1e-5)


# --------------------------------------------------------------------------------------
# M3TL against its reductions (m3tl.reductions)
# --------------------------------------------------------------------------------------


def test_cached_representation_gives_the_same_outputs_and_meta_test_scores():
    net, data = _full_net()
    net.eval()
    reads, z = m3tl.cache_representation(net, data)
    assert z.modality_shapes == {"representation": (net.embed_dim,)}
    a, b = net(data.packed()), reads(z.packed())
    for t in a:
        assert torch.allclose(a[t], b[t], atol=1e-5)
    episodes = {d: TaskEpisodes(x, "angle", n_way=3, k_shot=2, q_queries=3, seed=4).episodes(5)
                for d, x in (("raw", data), ("cached", z))}
    raw = m3tl.meta_test(net, "angle", episodes["raw"], parts="head", inner_lr=0.1, inner_steps=3)
    cached = m3tl.meta_test(reads, "angle", episodes["cached"], parts="head", inner_lr=0.1, inner_steps=3)
    assert torch.allclose(torch.as_tensor(raw.values), torch.as_tensor(cached.values), atol=1e-5)


def test_meta_test_of_the_head_alone_embeds_once_with_the_same_scores():
    net, data = _full_net()
    episodes = TaskEpisodes(data, "character", n_way=3, k_shot=2, q_queries=3, seed=5).episodes(6)
    head = m3tl.meta_test(net, "character", episodes, parts="head", inner_lr=0.5, inner_steps=3, metric=None)
    view = net.task_net("character")
    inner = meta.InnerLoop(0.5, 3, adapt_keys=view.keys("head"))  # every inner step through the whole network
    whole = meta.evaluate_episodes(view, episodes, inner=inner, metric=None)
    assert torch.allclose(torch.as_tensor(head.values), torch.as_tensor(whole.values), atol=1e-5)


def test_put_head_gives_every_reduction_a_zero_head_for_a_new_task():
    from mtl_course.m3tl import reductions

    net, data = _full_net()
    mtl = m3tl.build(m3tl.reduce(net.config, "mtl"), seed=0)
    with pytest.raises(ValueError, match="adds no unseen tasks"):
        mtl.add_task(m3tl.task("zoom", "regression"))
    view = reductions.put_head(mtl, m3tl.task("zoom", "regression"))
    assert torch.count_nonzero(view(data.packed())) == 0  # a zero head predicts zero
    reductions.put_head(mtl, m3tl.task("character", "classification", 3))  # replaces the 4-way head
    assert mtl(data.packed())["character"].shape == (len(data), 3)


def test_reduction_study_builds_each_variant_from_the_chapters_network():
    from mtl_course.m3tl import reductions

    c = reductions.ReductionStudy()
    shapes = {"image": (1, 28, 28), "profile": (56,)}
    image = models.Conv4(1, 32, None, image_size=28)
    nets = {v: reductions.variant_network(v, c, shapes, image, 7, seed=0) for v in reductions.VARIANTS}
    assert nets["M3TL"].config.reduction == "m3tl" and nets["M3TL"].config.encoders["image"].mode == "frozen"
    assert nets["MTL"].config.encoders["image"].mode == "scratch" and not nets["MTL"].config.meta
    assert nets["MTL"].specs["character"].out == 7  # every training character
    assert nets["meta (image)"].modalities == ["image"] and nets["meta (profile)"].modalities == ["profile"]
    assert all(nets[v].config.meta and not nets[v].config.backbone for v in ("meta (image)", "meta (profile)"))
    with pytest.raises(ValueError, match="at most M3TL's"):
        reductions.ReductionStudy(outer_steps=100, mtl_steps=(50, 200))
    with pytest.raises(ValueError, match="variant must be one of"):
        reductions.run_key("STL", 0)


def test_reduction_study_trains_every_network_keeps_it_and_tests_it_with_new_heads(monkeypatch, tmp_path):
    from dataclasses import asdict

    from mtl_course import runtime
    from mtl_course.data import load_glyphs
    from mtl_course.m3tl import reductions, stored

    c = reductions.ReductionStudy(outer_steps=4, mtl_steps=(2, 4), seeds=2, val_episodes=3, eval_every=2)
    checkpoint = runtime.Checkpoint(tmp_path / "reductions.pt", hold=True)
    trained = reductions.train_reductions_recipe(asdict(c), 0, device=torch.device("cpu"), checkpoint=checkpoint)
    runs = trained.extra["runs"]
    assert list(runs) == [reductions.run_key(v, s) for s in (0, 1) for v in reductions.VARIANTS]
    assert runs["MTL 0"]["steps"] in c.mtl_steps and set(runs["MTL 0"]["val_loss_by_steps"]) == {"2", "4"}
    assert runs["MTL 0"]["val_loss"] == min(runs["MTL 0"]["val_loss_by_steps"].values())
    # what the store's build function makes holds every network; a second call trains nothing
    empty = reductions.build_reduction_networks(asdict(c))
    empty.load_state_dict(trained.model.state_dict())
    retrained = lambda *a, **k: pytest.fail("a finished network was trained again")  # noqa: E731
    monkeypatch.setattr(reductions, "train_variant", retrained)
    again = reductions.train_reductions_recipe(asdict(c), 0, device=torch.device("cpu"), checkpoint=checkpoint)
    assert again.extra["runs"] == runs
    # every network is tested with the same new heads, step sizes chosen on validation
    glyphs = load_glyphs(seed=0)
    test, val = (stored.chapter_data(glyphs, part, 4, 10) for part in ("test", "val"))
    new = [m3tl.task("ink", "regression")]
    for v in reductions.VARIANTS:
        scores = reductions.meta_test_heads(trained.model.network(f"{v} 1"), new, ["character", "ink"], test, val,
                                            num_episodes=4, num_val_episodes=3)
        assert 0 <= scores["character"][0].mean <= 1 and scores["ink"][0].mean > 0
        assert scores["ink"][1] in [f * stored.INNER_LR["regression"] for f in reductions.LR_FACTORS]
    assert "ink" not in trained.model.network("MTL 1").heads  # the heads were put on a copy


# --------------------------------------------------------------------------------------
# Chapter 4's ProtoNet on Chapter 8's data (m3tl.protonet)
# --------------------------------------------------------------------------------------


def test_protonet_of_chapter_8_embeds_with_the_mtl_reductions_layers():
    from mtl_course.m3tl import protonet, reductions

    c = protonet.ProtoNetStudy()
    shapes = {"image": (1, 28, 28), "profile": (56,)}
    net = protonet.protonet_network(c, shapes, models.Conv4(1, 32, None, image_size=28), seed=0)
    mtl = reductions.variant_network("MTL", c, shapes, models.Conv4(1, 32, None, image_size=28), 5, seed=0)
    assert {m: s.mode for m, s in net.config.encoders.items()} == {"image": "scratch", "profile": "scratch"}
    assert net.config.fusion is not None and net.config.backbone is not None
    assert net.specs["character"].out == 5 and not net.config.meta
    x = torch.rand(3, 28 * 28 + 56)
    assert torch.equal(protonet.Embedding(net)(x), net.embed(x)) and torch.equal(net.embed(x), mtl.embed(x))
    assert c.train_way * (1 + 5) * c.train_episodes == 2 * c.meta_batch * 5 * (1 + 5)  # M3TL's examples per step
    with pytest.raises(ValueError, match="at least the test's 5 ways"):
        protonet.ProtoNetStudy(train_way=3)


def test_protonet_study_trains_keeps_each_network_and_classifies_by_the_nearest_prototype(tmp_path):
    from dataclasses import asdict

    from mtl_course import runtime
    from mtl_course.data import load_glyphs
    from mtl_course.m3tl import protonet, reductions, stored

    c = protonet.ProtoNetStudy(outer_steps=4, seeds=2, val_episodes=3, eval_every=2, train_way=5, train_episodes=2,
                               meta_lrs=(1e-4, 3e-3))
    checkpoint = runtime.Checkpoint(tmp_path / "protonet.pt", hold=True)
    trained = protonet.train_protonet_recipe(asdict(c), 0, device=torch.device("cpu"), checkpoint=checkpoint)
    runs, choice = trained.extra["runs"], trained.extra["meta_lr_choice"]
    assert list(runs) == ["ProtoNet 0", "ProtoNet 1"] and runs["ProtoNet 0"]["steps"] in (2, 4)
    # the rate with the lowest validation loss on the first seed trains every seed
    assert set(choice) == {"0.0001", "0.003"} and trained.extra["meta_lr"] == float(min(choice, key=choice.get))
    assert runs["ProtoNet 0"]["val_loss"] == min(choice.values())
    assert runs["ProtoNet 0"]["meta_lr"] == runs["ProtoNet 1"]["meta_lr"] == trained.extra["meta_lr"]
    again = protonet.train_protonet_recipe(asdict(c), 0, device=torch.device("cpu"), checkpoint=checkpoint)
    assert again.extra["runs"] == runs  # every run was kept: nothing trains twice
    untrained = protonet.protonet_network(c, {"image": (1, 28, 28), "profile": (56,)},
                                          stored.untrained_image_encoder(), seed=1)
    net = trained.model.network("ProtoNet 1")
    changed = [k for k, v in net.encoders.state_dict().items() if not torch.equal(v, untrained.encoders.state_dict()[k])]
    assert changed, "meta-training moved no encoder weight"
    empty = protonet.build_protonet_networks(asdict(c))
    empty.load_state_dict(trained.model.state_dict())
    # nearest prototype, computed here from the network's own embedding of the raw episodes
    glyphs = load_glyphs(seed=0)
    test, val = (stored.chapter_data(glyphs, part, 4, 10) for part in ("test", "val"))
    scores = reductions.meta_test_heads(net, [m3tl.task("ink", "regression")], ["character", "ink"], test, val,
                                        num_episodes=4, num_val_episodes=3, prototypes=True)
    raw = TaskEpisodes(test, "character", n_way=5, k_shot=1, q_queries=5, modalities=net.modalities,
                       seed=10).episodes(4)
    net.eval()
    with torch.no_grad():
        expected = [float((torch.cdist(net.embed(e.query_X), net.embed(e.support_X)).argmin(1) == e.query_y)
                          .float().mean()) for e in raw]  # 1-shot: the support embeddings are the prototypes
    assert scores["character"][0].values == pytest.approx(expected) and scores["character"][1] is None
    assert scores["ink"][0].mean > 0 and scores["ink"][1] in [f * stored.INNER_LR["regression"]
                                                              for f in reductions.LR_FACTORS]
