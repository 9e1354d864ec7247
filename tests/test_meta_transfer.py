"""Tests of mtl_course.meta_transfer: SS convolutions, the three phases' invariants, HT, and Chapter 6's closed forms."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtl_course import meta_transfer as mt
from mtl_course import meta, models
from mtl_course.data import EpisodeSampler, LabelledSet


def tiny_backbone(seed: int = 0) -> models.ResNet12:
    torch.manual_seed(seed)
    return models.ResNet12(1, (4, 4, 8, 8)).eval()


def tiny_glyphs(num_classes: int = 12, per_class: int = 6, seed: int = 0) -> LabelledSet:
    """Random 1×16×16 images whose class shifts the mean, so a network can separate them a little."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(num_classes).repeat_interleave(per_class)
    X = torch.rand(len(y), 1, 16, 16, generator=g) + 0.2 * (y.float() / num_classes)[:, None, None, None]
    return LabelledSet(X, y, [str(c) for c in range(num_classes)])


# ----------------------------------------------------------------------------- SS convolution


@pytest.mark.parametrize("per", mt.SS_MODES)
def test_ss_identity_reproduces_frozen_network_exactly(per):
    backbone = tiny_backbone()
    x = torch.rand(3, 1, 16, 16)
    wrapped = mt.wrap_with_ss(backbone, per)
    assert torch.equal(wrapped.features(x), backbone.features(x))


@pytest.mark.parametrize("per", mt.SS_MODES)
def test_ss_equals_hand_computed_scaled_convolution(per):
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 2, 3, padding=1, bias=True).double()
    ss = mt.SSConv2d(conv, per).double()
    with torch.no_grad():
        ss.scale.copy_(torch.rand_like(ss.scale) + 0.5)
        ss.shift.copy_(torch.randn_like(ss.shift))
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    # hand computation: loop over output pixels, input channels and kernel taps
    W, b = conv.weight.detach(), conv.bias.detach()
    s1 = ss.scale.detach().expand(2, 3, 1, 1)[:, :, 0, 0]
    padded = F.pad(x, (1, 1, 1, 1))[0]
    expected = torch.zeros(2, 4, 4, dtype=torch.float64)
    for o in range(2):
        for i in range(4):
            for j in range(4):
                total = b[o] + ss.shift[o].detach()
                for c in range(3):
                    total = total + s1[o, c] * (W[o, c] * padded[c, i:i + 3, j:j + 3]).sum()
                expected[o, i, j] = total
    torch.testing.assert_close(ss(x)[0].detach(), expected)


def test_ss_channel_and_pair_agree_when_pair_scale_is_constant_per_filter():
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    a, b = mt.SSConv2d(conv, "channel"), mt.SSConv2d(conv, "pair")
    with torch.no_grad():
        a.scale.copy_(torch.rand(4, 1, 1, 1))
        b.scale.copy_(a.scale.expand(4, 3, 1, 1))
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(a(x), b(x))


def test_ss_shapes_and_bad_input():
    conv = nn.Conv2d(3, 4, 3)
    assert mt.SSConv2d(conv, "channel").scale.shape == (4, 1, 1, 1)
    assert mt.SSConv2d(conv, "pair").scale.shape == (4, 3, 1, 1)
    with pytest.raises(ValueError, match="per must be"):
        mt.SSConv2d(conv, "filter")
    with pytest.raises(ValueError, match="shift"):
        mt.ss_conv2d(torch.randn(1, 3, 5, 5), conv.weight, conv.bias, torch.ones(4, 1, 1, 1), torch.zeros(3))
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        mt.wrap_with_ss(nn.Linear(2, 2))


def test_wrap_freezes_everything_but_ss_and_leaves_the_original_alone():
    backbone = tiny_backbone()
    wrapped = mt.wrap_with_ss(backbone)
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert trainable == set(mt.ss_parameter_names(wrapped))
    assert all(p.requires_grad for p in backbone.parameters())  # the input was copied, not modified
    convs = sum(isinstance(m, nn.Conv2d) for m in backbone.modules())
    assert len(mt.ss_parameter_names(wrapped)) == 2 * convs == 2 * 16


def test_parameter_counts_are_the_chapters_formulas():
    backbone = models.ResNet12(1, (16, 32, 64, 128))
    widths = [1, 16, 32, 64, 128]
    ft = ch = pair = 0
    for cin, cout in zip(widths[:-1], widths[1:]):
        layers = [(cin, cout, 9), (cout, cout, 9), (cout, cout, 9), (cin, cout, 1)]  # 3×3 ×3 + 1×1 shortcut
        ft += sum(i * o * k for i, o, k in layers)
        ch += sum(2 * o for _, o, _ in layers)
        pair += sum(i * o + o for i, o, _ in layers)
    counts = mt.touched_parameters(backbone)
    assert counts == {"fine-tuning": ft, "SS (channel)": ch, "SS (pair)": pair}
    assert mt.touched_parameters(mt.wrap_with_ss(backbone)) == counts
    wrapped = mt.wrap_with_ss(backbone, "channel")
    assert sum(p.numel() for p in wrapped.parameters() if p.requires_grad) == ch


# ----------------------------------------------------------------------------- phases 2 and 3


def test_frozen_weights_never_change_during_meta_training_and_ss_does():
    data = tiny_glyphs()
    model = mt.mtl_model(tiny_backbone(), n_way=3, mode="ss")
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    ss_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    sampler = EpisodeSampler(data, range(12), n_way=3, k_shot=1, q_queries=2, seed=0)
    history = mt.meta_transfer_train(model, sampler, outer_steps=4, tasks_per_batch=2, meta_lr=1e-2,
                                     inner_steps=2, hard_tasks=True, ht_every=1)
    assert history.hard_batches == 2
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"{n} changed although it is frozen"
    assert any(not torch.equal(p, ss_before[n]) for n, p in model.named_parameters() if p.requires_grad)


def test_the_base_learner_adapts_the_head_only_and_is_differentiable_in_ss():
    data = tiny_glyphs()
    model = mt.mtl_model(tiny_backbone(), n_way=3, mode="ss")
    episode = EpisodeSampler(data, range(12), 3, 1, 2, seed=1).sample()
    out = meta.meta_objective(model, [episode], inner=mt.inner_loop(0.5, 3), backend="loop")
    assert out.query_outputs.shape == (1, 6, 3)
    out.loss.backward()
    scale = model.block1.conv1.scale
    assert scale.grad is not None and scale.grad.abs().sum() > 0
    assert model.block1.conv1.conv.weight.grad is None
    # with zero inner steps the zero-initialised head gives uniform predictions
    out0 = meta.meta_objective(model, [episode], inner=mt.inner_loop(0.5, 0), backend="loop")
    assert out0.loss.item() == pytest.approx(np.log(3), abs=1e-6)


def test_meta_test_matches_adapting_the_head_of_the_full_model():
    data = tiny_glyphs()
    model = mt.mtl_model(tiny_backbone(), n_way=3, mode="ss")
    with torch.no_grad():
        model.head.weight.normal_()
    scores = mt.meta_test(model, data, list(range(6, 12)), num_episodes=5, n_way=3, k_shot=1, q_queries=2,
                          inner_lr=0.3, inner_steps=2, seed=3)
    # same episodes, drawn from the raw images of the same classes, the head adapted on top of the whole network
    episodes = EpisodeSampler(data.subset(range(6, 12)), None, 3, 1, 2, seed=3).batch(5)
    expected = meta.evaluate_episodes(model, episodes, method="anil", inner=meta.InnerLoop(0.3, 2), backend="loop")
    np.testing.assert_allclose(scores.values, expected.values)


def hand_written_phase_2(model, sampler, outer_steps, tasks_per_batch, meta_lr, inner_lr, inner_steps):
    """Sun et al.'s Eqs. 3-5 by hand: SGD on the head from its initialisation, Adam on the mean query loss."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=meta_lr)
    for _ in range(outer_steps):
        losses = []
        for e in sampler.batch(tasks_per_batch):
            support, query = model.features(e.support_X), model.features(e.query_X)
            w, b = model.head.weight, model.head.bias
            for _ in range(inner_steps):
                gw, gb = torch.autograd.grad(F.cross_entropy(F.linear(support, w, b), e.support_y), (w, b),
                                             create_graph=True)
                w, b = w - inner_lr * gw, b - inner_lr * gb
            losses.append(F.cross_entropy(F.linear(query, w, b), e.query_y))
        optimizer.zero_grad()
        torch.stack(losses).mean().backward()
        optimizer.step()


def test_phase_2_is_adam_on_the_query_loss_of_the_adapted_classifier():
    torch.set_default_dtype(torch.float64)
    try:
        data = tiny_glyphs()
        data = LabelledSet(data.X.double(), data.y, data.class_names)
        trained = []
        for train in ("package", "by hand"):
            model = mt.mtl_model(tiny_backbone(), n_way=3, mode="ss")
            sampler = EpisodeSampler(data, range(12), n_way=3, k_shot=1, q_queries=2, seed=0)
            settings = dict(outer_steps=3, tasks_per_batch=2, meta_lr=1e-2, inner_lr=0.5, inner_steps=2)
            if train == "package":
                mt.meta_transfer_train(model, sampler, **settings)
            else:
                hand_written_phase_2(model, sampler, **settings)
            trained.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
    finally:
        torch.set_default_dtype(torch.float32)
    ss = [n for n in trained[0] if n.endswith("scale")]
    assert ss and any((trained[0][n] != 1).any() for n in ss), "SS moved"
    for name in trained[0]:
        torch.testing.assert_close(trained[0][name], trained[1][name], rtol=1e-9, atol=1e-12)


def test_the_ht_sampler_puts_a_hard_batch_after_every_few_regular_ones():
    data = tiny_glyphs()
    sampler = EpisodeSampler(data, range(12), n_way=3, k_shot=1, q_queries=2, seed=0)
    batches = mt.HardTaskSampler(sampler, tasks_per_batch=2, hard_tasks=True, every=2, seed=0)
    kinds, expected = [], []
    for _ in range(6):
        batch = batches()
        kinds.append("hard" if "hard_classes" in batch[0].info else "regular")
        # the query examples of label 0 are predicted as label 1, the others right: label 0 fails
        y = torch.stack([e.query_y for e in batch])
        logits = F.one_hot(torch.where(y == 0, 1, y), 3).float()
        batches.observe(batch, meta.MetaOutput(torch.tensor(0.0), torch.zeros(2), logits, y))
        if kinds[-1] == "regular":
            expected += [e.classes[0] for e in batch]
        else:
            assert set(batch[0].info["hard_classes"]) <= set(expected[-4:])
    assert kinds == ["regular", "regular", "hard"] * 2
    assert batches.hard_batches == 2 and batches.failures == expected
    plain = mt.HardTaskSampler(sampler, tasks_per_batch=2)
    assert all("hard_classes" not in plain()[0].info for _ in range(5))
    with pytest.raises(ValueError, match="must be >= 1"):
        mt.HardTaskSampler(sampler, tasks_per_batch=0)


def test_mtl_model_modes():
    backbone = tiny_backbone()
    head = {"head.weight", "head.bias"}
    names = lambda m: {n for n, p in m.named_parameters() if p.requires_grad}  # noqa: E731
    assert names(mt.mtl_model(backbone, 3, "frozen")) == head
    assert names(mt.mtl_model(backbone, 3, "fine-tune")) == {n for n, _ in backbone.named_parameters()} | head
    assert names(mt.mtl_model(backbone, 3, "ss-pair")) - head == set(mt.ss_parameter_names(mt.wrap_with_ss(backbone)))
    with pytest.raises(ValueError, match="mode must be"):
        mt.mtl_model(backbone, 3, "maml")


# ----------------------------------------------------------------------------- hard tasks


def test_failure_class_is_the_lowest_accuracy_class():
    # task 0: classes [10, 11, 12]; class label 1 (id 11) is always wrong
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = torch.tensor([[5.0, 0, 0], [5, 0, 0], [5, 0, 0], [5, 0, 0], [0, 0, 5], [0, 0, 5]])
    # task 1: all correct, but label 2 (id 22) is the least confident
    logits1 = torch.tensor([[5.0, 0, 0], [5, 0, 0], [0, 5, 0], [0, 5, 0], [0, 0, 1], [0, 0, 1]])
    found = mt.failure_classes(torch.stack([logits, logits1]), torch.stack([y, y]), [[10, 11, 12], [20, 21, 22]])
    assert found == [11, 22]
    np.testing.assert_allclose(mt.class_accuracies(logits, y, 3).numpy(), [1.0, 0.0, 1.0])


def test_hard_tasks_draw_from_the_failure_classes():
    data = tiny_glyphs(num_classes=12)
    failures = [3, 7, 3]
    rng = np.random.default_rng(0)
    batch = mt.hard_task_batch(data, failures, list(range(12)), num_tasks=20, n_way=4, k_shot=1, q_queries=2, rng=rng)
    for e in batch:
        assert set(e.info["hard_classes"]) == {3, 7}, "all distinct failure classes fit in a 4-way task"
        assert {3, 7} <= set(e.classes) and len(set(e.classes)) == 4
        for label, c in enumerate(e.classes):  # the images really come from those classes
            rows = torch.nonzero(data.y == c).squeeze(1)
            for img in e.support_X[e.support_y == label]:
                assert any(torch.equal(img, data.X[r]) for r in rows)
    # more failures than ways: every task is made of failure classes only
    many = mt.hard_task_batch(data, [0, 1, 2, 3, 4, 5], list(range(12)), 10, 3, 1, 2, rng)
    assert all(set(e.classes) <= {0, 1, 2, 3, 4, 5} for e in many)
    with pytest.raises(ValueError, match="at least one failure"):
        mt.hard_task_batch(data, [], list(range(12)), 1, 3, 1, 2, rng)


def test_validation_starts_before_meta_training_and_restores_the_best_state():
    data = tiny_glyphs()
    model = mt.mtl_model(tiny_backbone(), n_way=3, mode="ss")
    sampler = EpisodeSampler(data, range(6), n_way=3, k_shot=1, q_queries=2, seed=0)
    history = mt.meta_transfer_train(model, sampler, outer_steps=3, tasks_per_batch=2, inner_steps=1,
                                     val=(data, list(range(6, 12))), num_val_episodes=4, val_queries=2,
                                     eval_every=2)
    assert history.tasks == [0, 4, 6] and history.val_step == [0, 2, 3]
    assert history.best_step == history.val_step[int(np.argmax(history.val_metric))]
    again = mt.meta_test(model, data, list(range(6, 12)), num_episodes=4, n_way=3, k_shot=1, q_queries=2,
                         inner_steps=1)
    assert again.mean == pytest.approx(max(history.val_metric))


def test_counts_quoted_in_chapter_5_for_the_papers_resnet12():
    counts = mt.touched_parameters(models.ResNet12(3, (64, 160, 320, 640)))
    assert counts == {"fine-tuning": 12_414_848, "SS (channel)": 9_472, "SS (pair)": 1_620_992}


# ----------------------------------------------------------------------------- the stored study of phase 2


def tiny_study(monkeypatch) -> mt.Phase2Study:
    data = tiny_glyphs(num_classes=12, per_class=16)  # validation episodes take 15 queries per class
    split = type("Split", (), {"train": list(range(8)), "val": list(range(8, 12)), "test": []})()
    monkeypatch.setattr(mt, "_glyphs_and_split", lambda: (data, split))
    monkeypatch.setattr(mt, "pretrained_backbone", lambda *args, **kwargs: tiny_backbone())
    return mt.Phase2Study(n_way=3, q_queries=2, outer_steps=4, tasks_per_batch=2, inner_steps=2, seeds=2,
                          eval_every=2, val_classes=4, val_episodes=3, meta_lrs=(1e-3, 1e-5))


def test_the_study_stores_what_each_run_meta_learned_and_resumes_after_its_finished_runs(monkeypatch, tmp_path):
    from mtl_course import runtime

    c = tiny_study(monkeypatch)
    checkpoint = runtime.Checkpoint(tmp_path / "study.pt", hold=True)
    trained = mt.train_study_recipe(mt.asdict(c), seed=0, checkpoint=checkpoint)
    runs = [mt.study_run_key(v, s) for s in (0, 1) for v in mt.STUDY_VARIANTS]
    assert list(trained.extra["runs"]) == runs
    assert trained.extra["runs"]["SS + HT 0"]["hard_batches"] > 0 == trained.extra["runs"]["SS 0"]["hard_batches"]
    # every variant's rate is the one whose first-seed run validated best, and the other seeds use it
    for v in mt.STUDY_VARIANTS:
        tried = trained.extra["meta_lr_choice"][v]
        assert f"{trained.extra['meta_lr'][v]:g}" == max(tried, key=tried.get)
        assert trained.extra["runs"][f"{v} 1"]["meta_lr"] == trained.extra["meta_lr"][v]
    # the runs' files make a second call train nothing and give the same weights and records
    monkeypatch.setattr(mt, "study_run", lambda *args, **kwargs: pytest.fail("a finished run was trained again"))
    again = mt.train_study_recipe(mt.asdict(c), seed=0, checkpoint=checkpoint)
    assert again.extra == trained.extra and all(
        torch.equal(a, b) for a, b in zip(again.model.state_dict().values(), trained.model.state_dict().values()))
    # a run's network is the backbone with that run's tensors: SS touches the scales, fine-tuning every weight
    backbone = tiny_backbone()
    ss, ft = (mt.study_model(trained.model, backbone, c.n_way, f"{v} 1") for v in ("SS", "fine-tune + meta"))
    assert set(trained.model.tensors("SS 1")) == set(mt.ss_parameter_names(ss)) | {"head.weight", "head.bias"}
    assert torch.equal(ss.head.weight, trained.model.tensors("SS 1")["head.weight"])
    assert len(trained.model.tensors("fine-tune + meta 1")) == len(list(ft.parameters()))
    empty = mt.StudyWeights(mt.study_shapes(c, backbone, 0))
    empty.load_state_dict(trained.model.state_dict())  # what the store's build function makes, filled in
    with pytest.raises(KeyError, match="no run"):
        trained.model.tensors("SS 7")
    with pytest.raises(ValueError, match="variant must be one of"):
        mt.study_run_key("HT", 0)
