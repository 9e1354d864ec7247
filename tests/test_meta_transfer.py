"""Tests of mtl_course.meta_transfer: SS convolutions, the three phases' invariants, HT, and Chapter 6's closed forms."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtl_course import meta_transfer as mt
from mtl_course import models
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
    history = mt.meta_transfer_train(model, sampler, num_batches=4, tasks_per_batch=2, meta_lr=1e-2,
                                     inner_steps=2, hard_tasks=True, ht_every=1)
    assert history.hard_batches == 2
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"{n} changed although it is frozen"
    assert any(not torch.equal(p, ss_before[n]) for n, p in model.named_parameters() if p.requires_grad)


def test_task_loss_inner_loop_adapts_head_only_and_is_differentiable_in_ss():
    data = tiny_glyphs()
    model = mt.mtl_model(tiny_backbone(), n_way=3, mode="ss")
    episode = EpisodeSampler(data, range(12), 3, 1, 2, seed=1).sample()
    loss, logits = mt.task_loss(model, episode, inner_lr=0.5, inner_steps=3)
    assert logits.shape == (6, 3)
    loss.backward()
    scale = model.block1.conv1.scale
    assert scale.grad is not None and scale.grad.abs().sum() > 0
    assert model.block1.conv1.conv.weight.grad is None
    # with zero inner steps the zero-initialised head gives uniform predictions
    loss0, _ = mt.task_loss(model, episode, inner_lr=0.5, inner_steps=0)
    assert loss0.item() == pytest.approx(np.log(3), abs=1e-6)


def test_meta_test_matches_adapting_the_full_model():
    data = tiny_glyphs()
    model = mt.mtl_model(tiny_backbone(), n_way=3, mode="ss")
    with torch.no_grad():
        model.head.weight.normal_()
    scores = mt.meta_test(model, data, list(range(6, 12)), num_episodes=5, n_way=3, k_shot=1, q_queries=2,
                          inner_lr=0.3, inner_steps=2, seed=3)
    # same episodes, drawn from the raw images of the same classes, adapted through the whole network
    episodes = EpisodeSampler(data.subset(range(6, 12)), None, 3, 1, 2, seed=3).batch(5)
    expected = []
    model.eval()
    for e in episodes:
        _, logits = mt.task_loss(model, e, inner_lr=0.3, inner_steps=2)
        expected.append((logits.argmax(1) == e.query_y).float().mean().item())
    np.testing.assert_allclose(scores.values, expected)


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
    history = mt.meta_transfer_train(model, sampler, num_batches=3, tasks_per_batch=2, inner_steps=1,
                                     val=(data, list(range(6, 12))), num_val_episodes=4, val_queries=2,
                                     eval_every=2)
    assert history.tasks == [0, 4, 6]
    best = history.tasks[int(np.argmax(history.val_metric))]
    assert history.best_tasks == best
    again = mt.meta_test(model, data, list(range(6, 12)), num_episodes=4, n_way=3, k_shot=1, q_queries=2,
                         inner_steps=1)
    assert again.mean == pytest.approx(max(history.val_metric))


def test_counts_quoted_in_chapter_5_for_the_papers_resnet12():
    counts = mt.touched_parameters(models.ResNet12(3, (64, 160, 320, 640)))
    assert counts == {"fine-tuning": 12_414_848, "SS (channel)": 9_472, "SS (pair)": 1_620_992}
