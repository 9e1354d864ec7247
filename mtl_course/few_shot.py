"""Chapter 4's few-shot experiments: the stored meta-learners, the baselines, and how they are scored.

Every model here is trained once by ``make models`` (the recipes registered at
the bottom) and loaded by the chapter. The protocol is the few-shot papers':

* **data**: Glyphs at 28×28 (:func:`glyphs_split`), its alphabets split 60/20/20
  into meta-training, validation and meta-test, so test characters come from
  alphabets never seen in training (one held-out alphabet of a different kind,
  :data:`FINE_GRAINED_ALPHABETS`, is tested on its own as a shift);
* **model**: Conv-4 with 64 channels and GroupNorm, which normalises every image
  on its own, so that meta-test needs no batch statistics (BatchNorm would have
  to use the query batch, "transductive" batch norm);
* **selection**: the checkpoint is chosen on validation episodes, and so is the
  adaptation at test time (steps and step size, per setting), never on test episodes;
* **test**: 600 episodes per setting, 15 queries per class, mean ± 95 % interval
  (:data:`TEST_SETTINGS`, :data:`NUM_TEST`, :data:`TEST_QUERIES`).

:func:`score` evaluates a model on any setting, adapting as its method does.
A model meta-trained on 5-way episodes is tested on 20-way ones with its head
widened by :func:`widen_head`: the head's rows are averaged and the average is
copied to all 20 outputs. Labels are shuffled in every training episode, so no
row can learn anything a different row would not; the average keeps what they
share (Ye & Chao, 2022, make the same observation).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import meta, models, runtime, store, training
from .data import ClassSplit, EpisodeSampler, LabelledSet, load_glyphs, split_classes, split_examples
from .data.sinusoid import SinusoidTasks

TEST_SETTINGS: tuple[tuple[int, int], ...] = ((5, 1), (5, 5), (20, 1))
"""The (N-way, K-shot) settings every stored few-shot model is tested in."""
NUM_TEST, NUM_VAL, TEST_QUERIES = 600, 100, 15
TEST_SEED, VAL_SEED = 2, 3  # episode seeds of the meta-test and validation episodes
TEST_STEP_CHOICES = (1, 3, 5, 10, 20)
"""Adaptation steps at meta-test, one of which is chosen per model and setting on validation episodes.

Twenty steps matter at 5 shots: a learner meta-trained on 1-shot episodes
needs more steps to use five examples per class."""
TEST_LR_FACTORS = (1.0, 0.25)
"""Step sizes at meta-test, as fractions of the model's meta-training inner step size (chosen with the steps).

For Meta-SGD the factor scales all of its learned rates."""


def setting_key(n_way: int, k_shot: int) -> str:
    """The metric name of a setting in the store's manifest, e.g. ``test_acc_5w1s``."""
    return f"test_acc_{n_way}w{k_shot}s"


FINE_GRAINED_ALPHABETS = ("Yijing hexagrams",)
"""Held-out alphabets tested apart from the meta-test set, as a shift (Chapter 4, section 4.6).

The seed-0 split holds out three alphabets. The Yijing hexagrams are not like
the other two: each of their 64 characters is six horizontal strokes, whole or
broken, so two characters differ only in where a stroke has its gap, a detail of
one or two pixels at 28×28 under the drawings' distortions. No meta-training
alphabet looks like that, and every method scores far below its level on the
other held-out alphabets there (section 4.6 measures and asserts it). Mixed into
the meta-test set, those episodes would measure that one shift rather than
few-shot learning of new characters, so Chapter 4 reports them on their own.
"""


def glyphs_split() -> tuple[LabelledSet, ClassSplit]:
    """Glyphs (28×28, rendering seed 0) and its split by alphabet: the data of Chapter 4's section 4.5.

    Whole alphabets are split 60/20/20 (seed 0); the test part keeps the held-out
    alphabets other than :data:`FINE_GRAINED_ALPHABETS` (those are :func:`fine_grained_part`).
    """
    data = load_glyphs(seed=0)
    split = split_classes(data, by="group", fractions=(0.6, 0.2, 0.2), seed=0)
    test = [c for c in split.test if data.class_groups[c] not in FINE_GRAINED_ALPHABETS]
    return data, ClassSplit(split.train, split.val, test)


def fine_grained_part(data: LabelledSet, split: ClassSplit) -> LabelledSet:
    """The held-out characters of :data:`FINE_GRAINED_ALPHABETS`: in no part of ``split``, never trained on."""
    used = set(split.train) | set(split.val) | set(split.test)
    classes = [c for c in range(len(data.class_names))
               if data.class_groups[c] in FINE_GRAINED_ALPHABETS and c not in used]
    if not classes:
        raise ValueError(f"no held-out classes of {FINE_GRAINED_ALPHABETS} outside the split")
    return data.subset(classes)


def episodes(part: LabelledSet, n_way: int, k_shot: int, num: int, seed: int,
             q_queries: int = TEST_QUERIES) -> list:
    """``num`` episodes drawn from every class of ``part`` (a validation or test subset)."""
    return EpisodeSampler(part, None, n_way, k_shot, q_queries, seed=seed).batch(num)


# ---------------------------------------------------------------------------
# Meta-learners
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MetaLearnerConfig:
    """How one stored meta-learner is trained (its recipe's config)."""

    method: str
    n_way: int = 5  # training episodes
    k_shot: int = 1
    q_queries: int = 5
    meta_batch: int = 4
    outer_steps: int = 2000
    meta_lr: float = 1e-3
    inner_lr: float = 0.4
    inner_steps: int = 1
    hidden: int = 64
    eval_every: int = 200
    backend: str = "loop"  # the faster backend for Conv-4 on a CPU (benchmarks/)


class MetaSGDLearner(nn.Module):
    """A network together with Meta-SGD's learned per-parameter inner learning rates."""

    def __init__(self, net: nn.Module, init_lr: float = 0.4) -> None:
        super().__init__()
        self.net, self.init_lr = net, init_lr
        self.rates = nn.ParameterDict({_safe(k): nn.Parameter(torch.full_like(p, init_lr))
                                       for k, p in net.named_parameters()})

    def per_param_lr(self, scale: float = 1.0) -> dict[str, torch.Tensor]:
        """The rates keyed like the network's parameters (what :mod:`mtl_course.meta` expects), times ``scale``."""
        rates = {k: self.rates[_safe(k)] for k, _ in self.net.named_parameters()}
        return rates if scale == 1.0 else {k: scale * r for k, r in rates.items()}


def _safe(key: str) -> str:
    return key.replace(".", "__")


def build_meta_learner(config: Mapping, in_channels: int = 1, image_size: int = 28) -> nn.Module:
    """The untrained network of a meta-learner: a Conv-4 feature extractor (ProtoNet) or with a zero head."""
    c = MetaLearnerConfig(**config)
    if c.method == "protonet":
        return models.Conv4(in_channels, c.hidden, out_features=None, image_size=image_size)
    net = meta.zero_head_(models.Conv4(in_channels, c.hidden, out_features=c.n_way, image_size=image_size))
    return MetaSGDLearner(net, c.inner_lr) if c.method == "metasgd" else net


def network_and_rates(model: nn.Module, inner_lr: float | None = None) -> tuple[nn.Module, dict | None]:
    """The network to adapt and its learned rates (``None`` unless ``model`` is a :class:`MetaSGDLearner`).

    A test-time step size ``inner_lr`` scales the learned rates by
    ``inner_lr / init_lr``, the factor it is of the meta-training step size.
    """
    if isinstance(model, MetaSGDLearner):
        return model.net, model.per_param_lr(1.0 if inner_lr is None else inner_lr / model.init_lr)
    return model, None


def widen_head(model: nn.Module, n_way: int) -> nn.Module:
    """A copy of ``model`` whose linear head has ``n_way`` outputs, each the average of the trained rows.

    For a :class:`MetaSGDLearner` the head's learned rates are averaged the same way.
    """
    import copy

    wide = copy.deepcopy(model)
    net = wide.net if isinstance(wide, MetaSGDLearner) else wide
    head = net.head
    if head.out_features == n_way:
        return wide
    new = nn.Linear(head.in_features, n_way).to(head.weight.device)
    with torch.no_grad():
        new.weight.copy_(head.weight.mean(0, keepdim=True).expand(n_way, -1))
        new.bias.copy_(head.bias.mean().expand(n_way))
    net.head = new
    if isinstance(wide, MetaSGDLearner):
        for key in ("head.weight", "head.bias"):
            old = wide.rates[_safe(key)]
            mean = old.mean(0, keepdim=True).expand(n_way, *old.shape[1:]) if key.endswith("weight") \
                else old.mean().expand(n_way)
            wide.rates[_safe(key)] = nn.Parameter(mean.clone())
    return wide


def _features(net: nn.Module, part: LabelledSet) -> LabelledSet:
    from .transfer import extract_features

    return LabelledSet(extract_features(net, part.X), part.y, part.class_names, part.class_groups)


def score(model: nn.Module, method: str, part: LabelledSet, n_way: int, k_shot: int, *, num: int = NUM_TEST,
          seed: int = TEST_SEED, inner_lr: float = 0.4, inner_steps: int = 1,
          q_queries: int = TEST_QUERIES) -> meta.EpisodeScores:
    """Accuracy of a meta-learner on ``num`` episodes of ``part``, adapting as ``method`` does.

    ProtoNet classifies by the nearest prototype of its features. ANIL adapts
    only the head, on fixed features, so its features are computed once. The
    other methods adapt every weight (Meta-SGD with its learned rates, scaled
    by ``inner_lr`` over its meta-training step size) for ``inner_steps``
    steps; Reptile and first-order MAML adapt as MAML does.
    """
    if method == "protonet":
        return meta.evaluate_episodes(nn.Identity(), episodes(_features(model, part), n_way, k_shot, num, seed,
                                                              q_queries), method="protonet", chunk_size=100)
    model = widen_head(model, n_way)
    net, rates = network_and_rates(model, inner_lr)
    if method == "anil":
        return meta.evaluate_episodes(net.head, episodes(_features(net, part), n_way, k_shot, num, seed, q_queries),
                                      inner=meta.InnerLoop(inner_lr, inner_steps), chunk_size=num)
    return meta.evaluate_episodes(net, episodes(part, n_way, k_shot, num, seed, q_queries),
                                  inner=meta.InnerLoop(inner_lr, inner_steps, per_param_lr=rates),
                                  backend="loop", chunk_size=10)


def test_time_choices(method: str, inner_lr: float) -> list[tuple[int, float]]:
    """The (steps, step size) pairs at meta-test that :func:`choose_test_adaptation` picks from.

    ProtoNet has no steps; the other methods try :data:`TEST_STEP_CHOICES` at
    each of :data:`TEST_LR_FACTORS` times their meta-training step size
    ``inner_lr`` (Meta-SGD: its learned rates times the same factors).
    """
    if method == "protonet":
        return [(0, inner_lr)]
    return [(steps, factor * inner_lr) for factor in TEST_LR_FACTORS for steps in TEST_STEP_CHOICES]


def choose_test_adaptation(model: nn.Module, method: str, val_part: LabelledSet, n_way: int, k_shot: int,
                           choices: Sequence[tuple[int, float]]) -> tuple[int, float, dict[str, float]]:
    """Of ``choices``, (steps, step size) pairs such as :func:`test_time_choices`, the one that does best
    on validation episodes of this setting.

    Returns its steps and step size, and every choice's validation accuracy
    (keys ``"steps@step size"``). Ties go to the first choice.
    """
    choices = list(choices)
    if len(choices) == 1:
        return *choices[0], {}
    val = {(steps, lr): score(model, method, val_part, n_way, k_shot, num=NUM_VAL, seed=VAL_SEED, inner_lr=lr,
                              inner_steps=steps).mean for steps, lr in choices}
    steps, lr = max(val, key=val.get)
    return steps, lr, {f"{s}@{r:g}": v for (s, r), v in val.items()}


def tested_settings(method: str) -> tuple[tuple[int, int], ...]:
    """The settings a stored meta-learner is tested in: all of :data:`TEST_SETTINGS`, except 20-way for the
    methods that adapt every weight other than MAML (600 such episodes take minutes on a 2-core CPU; MAML
    stands for them at 20-way)."""
    if method in ("protonet", "anil", "maml"):
        return TEST_SETTINGS
    return tuple(s for s in TEST_SETTINGS if s[0] == 5)


def test_all_settings(model: nn.Module, method: str, data: LabelledSet, split: ClassSplit, inner_lr: float,
                      settings: Sequence[tuple[int, int]] = TEST_SETTINGS) -> tuple[dict[str, float], dict]:
    """Metrics of a trained model in each of ``settings``, adapting as chosen on that setting's validation episodes.

    ``extra`` records, per setting, the steps and step size chosen by
    :func:`choose_test_adaptation` (``test_steps``, ``test_lr``) and every
    choice's validation accuracy (``val_by_choice``).
    """
    val_part, test_part = data.subset(split.val), data.subset(split.test)
    metrics, extra = {}, {"test_steps": {}, "test_lr": {}, "val_by_choice": {}}
    for n_way, k_shot in settings:
        key = setting_key(n_way, k_shot)
        steps, lr, by_choice = choose_test_adaptation(model, method, val_part, n_way, k_shot,
                                                      test_time_choices(method, inner_lr))
        result = score(model, method, test_part, n_way, k_shot, inner_lr=lr, inner_steps=steps)
        metrics[key], metrics[f"{key}_ci95"] = result.mean, result.ci95
        extra["test_steps"][key], extra["test_lr"][key], extra["val_by_choice"][key] = steps, lr, by_choice
    return metrics, extra


def train_meta_learner(config: MetaLearnerConfig, data: LabelledSet, split: ClassSplit, seed: int = 0,
                       device: torch.device | None = None, max_steps: int | None = None,
                       evaluate: bool = True, checkpoint: runtime.Checkpoint | None = None) -> store.Trained:
    """Meta-train one learner on ``split.train`` with :func:`mtl_course.meta.meta_train` and test it.

    The checkpoint kept is the best on 5-way validation episodes (every
    ``config.eval_every`` steps); then :func:`test_all_settings` scores it in
    every :data:`TEST_SETTINGS` (skipped with ``max_steps`` or ``evaluate=False``).
    ``checkpoint`` makes the meta-training resumable (:func:`mtl_course.meta.meta_train`).
    """
    c = config
    device = device or runtime.get_device()
    runtime.seed_everything(seed)
    model = build_meta_learner(asdict(c), data.X.shape[1], data.X.shape[-1]).to(device)
    net, rates = network_and_rates(model)
    sampler = EpisodeSampler(data, split.train, c.n_way, c.k_shot, c.q_queries, seed=seed + 1)
    val_episodes = episodes(data.subset(split.val), 5, c.k_shot, NUM_VAL, VAL_SEED, q_queries=c.q_queries)
    steps = c.outer_steps if max_steps is None else min(max_steps, c.outer_steps)
    history = meta.meta_train(
        net, lambda: sampler.batch(c.meta_batch), method=c.method, outer_steps=steps, meta_lr=c.meta_lr,
        inner=meta.InnerLoop(c.inner_lr, c.inner_steps, per_param_lr=rates), backend=c.backend,
        val_episodes=None if max_steps is not None else val_episodes, eval_every=c.eval_every,
        desc=f"{c.method}, {c.n_way}-way {c.k_shot}-shot", checkpoint=checkpoint)
    metrics, extra = {}, {}
    if evaluate and max_steps is None:
        metrics, extra = test_all_settings(model, c.method, data, split, c.inner_lr,
                                           tested_settings(c.method))
    extra.update({"val_step": history.val_step, "val_acc": history.val_metric, "best_step": history.best_step})
    if history.val_metric:
        metrics["val_acc_5w"] = max(history.val_metric)
    return store.Trained(model.eval(), metrics, history.loss, extra)


def evaluate_meta_learner(model: nn.Module, config: Mapping) -> tuple[dict[str, float], dict]:
    """The store's test of a meta-learner: :func:`test_all_settings` on :func:`glyphs_split`."""
    c = MetaLearnerConfig(**config)
    return test_all_settings(model, c.method, *glyphs_split(), c.inner_lr, tested_settings(c.method))


def train_meta_learner_recipe(config: dict, seed: int, max_steps: int | None = None,
                              device: torch.device | None = None,
                              checkpoint: runtime.Checkpoint | None = None) -> store.Trained:
    """The store's recipe for a meta-learner: :func:`train_meta_learner` on Glyphs (:func:`glyphs_split`)."""
    return train_meta_learner(MetaLearnerConfig(**config), *glyphs_split(), seed=seed, device=device,
                              max_steps=max_steps, checkpoint=checkpoint)


# ---------------------------------------------------------------------------
# The "good embedding" baseline: a classifier of all meta-training characters
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddingConfig:
    """Pre-training one classifier of every meta-training character (Chen et al., 2019; Tian et al., 2020)."""

    hidden: int = 64
    num_epochs: int = 20  # as many images as ProtoNet's 4,000 steps of 20-way episodes (Chapter 4 checks it)
    lr: float = 1e-3
    batch_size: int = 128
    val_fraction: float = 0.1


def build_embedding(config: Mapping) -> nn.Module:
    """The stored embedding network: Conv-4 without its classifier head."""
    return models.Conv4(1, config["hidden"], out_features=None, image_size=28)


def train_embedding_recipe(config: dict, seed: int, max_steps: int | None = None,
                           device: torch.device | None = None,
                           checkpoint: runtime.Checkpoint | None = None) -> store.Trained:
    """The store's recipe for the pre-trained embedding: ordinary supervised training, then the head dropped."""
    c = EmbeddingConfig(**config)
    device = device or runtime.get_device()
    data, split = glyphs_split()
    train, val, _ = split_examples(data.subset(split.train), (1 - c.val_fraction, c.val_fraction, 0.0), seed=seed)
    runtime.seed_everything(seed)
    model = models.Conv4(1, c.hidden, out_features=len(split.train), image_size=28).to(device)
    history = training.fit(model, (train.X, train.y), (val.X, val.y), num_epochs=c.num_epochs, lr=c.lr,
                           batch_size=c.batch_size, seed=seed, max_steps=max_steps, desc="pre-training (store)",
                           checkpoint=checkpoint)
    model.head = nn.Identity()
    metrics, extra = {}, {"epoch_val_acc": history.val_metric}
    if max_steps is None:
        metrics["val_acc_classes"] = history.best_val_metric
        test_metrics, test_extra = evaluate_embedding(model.eval(), config)
        metrics.update(test_metrics)
        extra.update(test_extra)
    return store.Trained(model.eval(), metrics, history.step_loss, extra)


def evaluate_embedding(model: nn.Module, config: Mapping) -> tuple[dict[str, float], dict]:
    """The store's test of the embedding and of the baselines that train on the support set alone.

    The logistic regression's step size is chosen on validation episodes, then
    both heads run on the test episodes of every setting (mean and 95 %
    interval). :func:`support_only_baselines` adds scratch and fine-tuning at
    5-way 1-shot (keys ``scratch_test_acc_5w1s``, ``finetune_test_acc_5w1s``).
    """
    data, split = glyphs_split()
    val_part, test_part = data.subset(split.val), data.subset(split.test)
    metrics, extra = {}, {}
    extra["logreg_lr"], extra["logreg_val_by_lr"] = choose_logreg_lr(model, val_part)
    for n_way, k_shot in TEST_SETTINGS:
        key = setting_key(n_way, k_shot)
        for head, result in (("centroid", nearest_centroid(model, test_part, n_way, k_shot)),
                             ("logreg", logistic_regression(model, test_part, n_way, k_shot,
                                                            lr=extra["logreg_lr"]))):
            metrics[f"{head}_{key}"], metrics[f"{head}_{key}_ci95"] = result.mean, result.ci95
    baseline_metrics, baseline_extra = support_only_baselines(model, val_part, test_part)
    return {**metrics, **baseline_metrics}, {**extra, **baseline_extra}


SUPPORT_ONLY_LRS = (0.003, 0.01, 0.03, 0.1)
"""Step sizes tried for the networks trained on the support set alone (with every step count of
:data:`TEST_STEP_CHOICES`), the same choice on validation episodes as the meta-learners get."""


def support_only_network(embedding: nn.Module | None, seed: int = 0) -> nn.Module:
    """Conv-4 with a zero 5-way head, on a random body (``embedding=None``) or on the pre-trained one."""
    runtime.seed_everything(seed)
    net = models.Conv4(1, 64, 5, image_size=28)
    if embedding is not None:
        net.load_state_dict(embedding.state_dict(), strict=False)  # the head stays new
        net = net.to(next(embedding.parameters()).device)
    return meta.zero_head_(net)


def support_only_baselines(embedding: nn.Module, val_part: LabelledSet, test_part: LabelledSet,
                           settings: Sequence[tuple[int, int]] = ((5, 1),)) -> tuple[dict[str, float], dict]:
    """Every weight trained on the support set alone: from scratch, and from the pre-trained embedding.

    Both adapt as MAML does at test time, with steps and step size chosen on
    validation episodes among :data:`TEST_STEP_CHOICES` × :data:`SUPPORT_ONLY_LRS`,
    then score the test episodes of each setting (default 5-way 1-shot: every
    weight adapts, so other settings take minutes).
    """
    choices = [(steps, lr) for lr in SUPPORT_ONLY_LRS for steps in TEST_STEP_CHOICES]
    metrics, extra = {}, {}
    for name, body in (("scratch", None), ("finetune", embedding)):
        net = support_only_network(body)
        for n_way, k_shot in settings:
            key = f"{name}_{setting_key(n_way, k_shot)}"
            steps, lr, by_choice = choose_test_adaptation(net, "maml", val_part, n_way, k_shot, choices)
            result = score(net, "maml", test_part, n_way, k_shot, inner_lr=lr, inner_steps=steps)
            metrics[key], metrics[f"{key}_ci95"] = result.mean, result.ci95
            extra[f"{key}_adaptation"] = {"steps": steps, "lr": lr, "val_by_choice": by_choice}
    return metrics, extra


def nearest_centroid(embedding: nn.Module, part: LabelledSet, n_way: int, k_shot: int, num: int = NUM_TEST,
                     seed: int = TEST_SEED) -> meta.EpisodeScores:
    """Frozen embedding, then the nearest class mean of the L2-normalised features (Chen et al., 2019)."""
    feats = _features(embedding, part)
    feats.X = F.normalize(feats.X, dim=1)
    return meta.evaluate_episodes(nn.Identity(), episodes(feats, n_way, k_shot, num, seed), method="protonet",
                                  chunk_size=100)


def logistic_regression(embedding: nn.Module, part: LabelledSet, n_way: int, k_shot: int, num: int = NUM_TEST,
                        seed: int = TEST_SEED, lr: float = 10.0, steps: int = 100) -> meta.EpisodeScores:
    """Frozen embedding, then a logistic regression fitted on each support set's normalised features (Tian et al.)."""
    feats = _features(embedding, part)
    feats.X = F.normalize(feats.X, dim=1)
    head = nn.Linear(feats.X.shape[1], n_way)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return meta.evaluate_episodes(head, episodes(feats, n_way, k_shot, num, seed), inner=meta.InnerLoop(lr, steps),
                                  chunk_size=num)


LOGREG_LRS = (1.0, 10.0, 100.0)


def choose_logreg_lr(embedding: nn.Module, val_part: LabelledSet) -> tuple[float, dict[str, float]]:
    """The logistic regression's step size that does best on 5-way 1-shot validation episodes."""
    val = {lr: logistic_regression(embedding, val_part, 5, 1, num=NUM_VAL, seed=VAL_SEED, lr=lr).mean
           for lr in LOGREG_LRS}
    best = max(val, key=val.get)
    return best, {str(k): v for k, v in val.items()}


def raw_pixels(part: LabelledSet, n_way: int, k_shot: int, num: int = NUM_TEST,
               seed: int = TEST_SEED) -> meta.EpisodeScores:
    """No learning at all: the nearest class mean of the raw pixels."""
    pixels = LabelledSet(part.X.flatten(1), part.y, part.class_names, part.class_groups)
    return meta.evaluate_episodes(nn.Identity(), episodes(pixels, n_way, k_shot, num, seed), method="protonet",
                                  chunk_size=25)


# ---------------------------------------------------------------------------
# Sinusoid regression (section 4.3)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SinusoidConfig:
    """MAML on sinusoids as in the MAML paper: MLP 40-40, K points, one inner step of 0.01, 25 tasks a batch."""

    k_shot: int = 10
    outer_steps: int = 15_000
    meta_batch: int = 25
    meta_lr: float = 1e-3
    inner_lr: float = 0.01
    pretrain: bool = False  # True: ordinary regression on pooled sinusoids, the same number of steps


SINE_TEST_TASKS, SINE_TEST_POINTS, SINE_TEST_SEED = 600, 100, 1010
SINE_PAPER_STEPS = 70_000  # the MAML paper's sinusoid training: the full profile
SINE_FINETUNE_LRS = (0.002, 0.005, 0.01, 0.02)


def sine_network() -> nn.Module:
    """The MAML paper's regression network: 1 → 40 → 40 → 1 with ReLUs."""
    return models.MLP(1, (40, 40), 1)


def sine_mse(net: nn.Module, tasks: list, lr: float, steps: int) -> meta.EpisodeScores:
    """Query mean squared error after ``steps`` gradient steps of size ``lr`` on each task's K points."""
    return meta.evaluate_episodes(net, tasks, inner=meta.InnerLoop(lr, steps), loss_fn=F.mse_loss, metric=None,
                                  chunk_size=len(tasks))


def choose_sine_lr(net: nn.Module, k_shot: int) -> tuple[float, dict[float, float]]:
    """The fine-tuning step size with the lowest validation MSE after 10 steps (200 validation tasks)."""
    val_tasks = SinusoidTasks(seed=1).batch(200, k_shot, SINE_TEST_POINTS)
    val = {lr: sine_mse(net, val_tasks, lr, 10).mean for lr in SINE_FINETUNE_LRS}
    return min(val, key=val.get), val


def train_sinusoid_recipe(config: dict, seed: int, max_steps: int | None = None,
                          device: torch.device | None = None,
                          checkpoint: runtime.Checkpoint | None = None) -> store.Trained:
    """The store's recipe for section 4.3: MAML, or pre-training on pooled sinusoids at the same number of steps."""
    c = SinusoidConfig(**config)
    steps = c.outer_steps if max_steps is None else min(max_steps, c.outer_steps)
    runtime.seed_everything(seed)
    net = sine_network()
    with runtime.num_threads_at_most(1):  # a tiny network: one thread is fastest
        if c.pretrain:
            pool = SinusoidTasks(seed=seed + 100).pooled(c.outer_steps * c.meta_batch, 20)  # an epoch: MAML's steps
            history = training.fit(net, pool, num_epochs=1, lr=c.meta_lr, loss_fn=F.mse_loss, metric=None,
                                   batch_size=c.meta_batch * 20, seed=seed, max_steps=max_steps,
                                   desc="sinusoid pre-training (store)", checkpoint=checkpoint)
            losses = history.step_loss
        else:
            tasks = SinusoidTasks(seed=seed + c.k_shot)
            history = meta.meta_train(net, lambda: tasks.batch(c.meta_batch, c.k_shot, c.k_shot),
                                      outer_steps=steps, meta_lr=c.meta_lr, inner=meta.InnerLoop(c.inner_lr, 1),
                                      loss_fn=F.mse_loss,
                                      metric=None, backend="vmap", desc="sinusoid MAML (store)",
                                      checkpoint=checkpoint)
            losses = history.loss
        metrics, extra = {}, {}
        if max_steps is None:
            lr, by_lr = choose_sine_lr(net, c.k_shot) if c.pretrain else (c.inner_lr, {})
            test = SinusoidTasks(seed=SINE_TEST_SEED).batch(SINE_TEST_TASKS, c.k_shot, SINE_TEST_POINTS)
            for steps_ in (0, 1, 10):
                result = sine_mse(net, test, lr, steps_)
                metrics[f"test_mse_{steps_}step"], metrics[f"test_mse_{steps_}step_ci95"] = result.mean, result.ci95
            extra = {"test_lr": lr, "val_mse_by_lr": {str(k): v for k, v in by_lr.items()}}
    return store.Trained(net, metrics, losses, extra)


def build_sine_network(config: Mapping) -> nn.Module:
    return sine_network()


# ---------------------------------------------------------------------------
# Training stability: MAML against MAML++ with several inner steps (section 4.8)
# ---------------------------------------------------------------------------


def downsampled(data: LabelledSet, size: int) -> LabelledSet:
    """``data`` with its images averaged down to ``size`` × ``size`` (for the chapter's small, fast networks)."""
    return LabelledSet(F.interpolate(data.X, size=(size, size), mode="area"), data.y, data.class_names,
                       data.class_groups)


@dataclass(frozen=True)
class StabilityConfig:
    """MAML and MAML++ with five second-order inner steps, on a small Conv-4, over several seeds and inner rates.

    MAML++ (Antoniou et al., 2019) here is its multi-step loss (annealed to the
    last step over the first half of training) and its learned per-layer,
    per-step inner rates, started at the same rate as MAML's fixed one.
    """

    hidden: int = 16
    image_size: int = 16
    inner_steps: int = 5
    inner_lrs: tuple[float, ...] = (0.1, 0.4)
    outer_steps: int = 200
    meta_batch: int = 4
    meta_lr: float = 1e-3
    seeds: int = 5
    eval_every: int = 50
    val_episodes: int = 50
    backend: str = "auto"


STABILITY_VARIANTS = ("MAML++", "MAML")


def build_stability_network(config: Mapping) -> nn.Module:
    c = StabilityConfig(**config)
    return meta.zero_head_(models.Conv4(1, c.hidden, 5, image_size=c.image_size))


def train_stability_run(c: StabilityConfig, variant: str, inner_lr: float, seed: int, data: LabelledSet,
                        split: ClassSplit, device: torch.device, max_steps: int | None = None,
                        checkpoint: runtime.Checkpoint | None = None):
    """One meta-training run of the study: the network, its history and (MAML++) its learned rates."""
    runtime.seed_everything(seed)
    net = build_stability_network(asdict(c)).to(device)
    plus = variant == "MAML++"
    rates = meta.init_step_lrs(models.params_of(net), inner_lr, c.inner_steps) if plus else None
    sampler = EpisodeSampler(data, split.train, 5, 1, 5, seed=seed + 1)
    val = episodes(data.subset(split.val), 5, 1, c.val_episodes, VAL_SEED, q_queries=5)
    steps = c.outer_steps if max_steps is None else min(max_steps, c.outer_steps)
    history = meta.meta_train(
        net, lambda: sampler.batch(c.meta_batch), outer_steps=steps, meta_lr=c.meta_lr,
        inner=meta.InnerLoop(inner_lr, c.inner_steps, step_lrs=rates), backend=c.backend,
        multi_step_loss=c.outer_steps // 2 if plus else 0,
        val_episodes=None if max_steps is not None else val, eval_every=c.eval_every,
        desc=f"{variant}, inner rate {inner_lr}, seed {seed}", checkpoint=checkpoint)
    return net, history, rates


def train_stability_recipe(config: dict, seed: int, max_steps: int | None = None,
                           device: torch.device | None = None,
                           checkpoint: runtime.Checkpoint | None = None) -> store.Trained:
    """The store's recipe for section 4.8: every variant × inner rate × seed of :class:`StabilityConfig`.

    The stored network is MAML++'s at the first inner rate and seed ``seed``
    (its loss is the stored curve); every run's validation curve, and MAML++'s
    learned rates, go into the manifest's extras. With ``checkpoint`` each run
    has its own part of it (:meth:`mtl_course.runtime.Checkpoint.part`).
    """
    c = StabilityConfig(**{**config, "inner_lrs": tuple(config["inner_lrs"])})
    device = device or runtime.get_device()
    data, split = glyphs_split()
    small = downsampled(data, c.image_size)
    with runtime.num_threads_at_most(1):  # a small network: one thread is fastest
        if max_steps is not None:
            net, history, _ = train_stability_run(c, "MAML++", c.inner_lrs[0], seed, small, split, device,
                                                  max_steps)
            return store.Trained(net, {}, history.loss)
        runs, kept = {}, None
        for inner_lr in c.inner_lrs:
            for s in range(seed, seed + c.seeds):
                for variant in STABILITY_VARIANTS:
                    key = f"{variant} {inner_lr} {s}"
                    part = checkpoint.part(key) if checkpoint is not None else None
                    net, history, rates = train_stability_run(c, variant, inner_lr, s, small, split, device,
                                                              checkpoint=part)
                    runs[key] = {
                        "val_step": history.val_step, "val_acc": history.val_metric, "loss": history.loss,
                        "step_lrs": None if rates is None else {k: v.tolist() for k, v in rates.items()}}
                    if kept is None:
                        kept = net, history
    net, history = kept
    finals = {key: run["val_acc"][-1] for key, run in runs.items()}
    metrics = {f"final_val_acc_{variant}_{lr}": float(np.mean([finals[f"{variant} {lr} {s}"]
                                                               for s in range(seed, seed + c.seeds)]))
               for variant in STABILITY_VARIANTS for lr in c.inner_lrs}
    return store.Trained(net.eval(), metrics, history.loss, {"runs": runs})


# ---------------------------------------------------------------------------
# The recipes
# ---------------------------------------------------------------------------

META_LEARNERS: dict[str, MetaLearnerConfig] = {
    "ProtoNet": MetaLearnerConfig("protonet", n_way=20, meta_batch=1, outer_steps=4000),
    "MAML": MetaLearnerConfig("maml", outer_steps=2400),
    # First-order MAML takes Reptile's inner loop: after 200 steps one step of 0.4 reached 39% on the
    # validation episodes, three steps of 0.4 57% and five steps of 0.1 74%.
    "first-order MAML": MetaLearnerConfig("fomaml", inner_lr=0.1, inner_steps=5, outer_steps=2400,
                                          eval_every=200),
    "ANIL": MetaLearnerConfig("anil", outer_steps=2800),
    "Meta-SGD": MetaLearnerConfig("metasgd", outer_steps=2400),
    "Reptile": MetaLearnerConfig("reptile", inner_lr=0.1, inner_steps=5, outer_steps=700, eval_every=100),
}
"""Chapter 4's meta-learners and how each is trained (5 to 17 minutes each on a 2-core CPU)."""

META_LEARNERS_FULL: dict[str, MetaLearnerConfig] = {
    # Snell et al. (2017) train on 60-way episodes with 5 queries per class, until validation stops improving.
    "ProtoNet": replace(META_LEARNERS["ProtoNet"], n_way=60, outer_steps=20_000, eval_every=500),
    # Finn et al. (2017), Omniglot 5-way 1-shot: 32 tasks a meta-batch, 60,000 outer steps (first-order MAML
    # as they run it; ANIL and Meta-SGD take MAML's settings). The inner loops stay those chosen above.
    "MAML": replace(META_LEARNERS["MAML"], meta_batch=32, outer_steps=60_000, eval_every=1000),
    "first-order MAML": replace(META_LEARNERS["first-order MAML"], meta_batch=32, outer_steps=60_000,
                                eval_every=1000),
    "ANIL": replace(META_LEARNERS["ANIL"], meta_batch=32, outer_steps=60_000, eval_every=1000),
    "Meta-SGD": replace(META_LEARNERS["Meta-SGD"], meta_batch=32, outer_steps=60_000, eval_every=1000),
    # Nichol et al. (2018), Omniglot: 5 tasks a meta-batch, 100,000 outer steps.
    "Reptile": replace(META_LEARNERS["Reptile"], meta_batch=5, outer_steps=100_000, eval_every=1000),
}
"""The ``full`` profile of each meta-learner (``python -m mtl_course.train NAME --profile full``, on a GPU):
the papers' meta-batches and step counts on the same 28×28 Glyphs episodes."""


def model_name(method_name: str) -> str:
    """The store's name for a meta-learner of :data:`META_LEARNERS`, e.g. ``glyphs-maml-conv4``."""
    return f"glyphs-{META_LEARNERS[method_name].method}-conv4"


EMBEDDING_MODEL_NAME = "glyphs-embedding-conv4"
SINE_MAML_MODEL_NAME, SINE_PRETRAINED_MODEL_NAME = "sinusoid-maml-mlp", "sinusoid-pretrained-mlp"
STABILITY_MODEL_NAME = "glyphs-mamlpp-stability"

for _name, _config in META_LEARNERS.items():
    store.register(store.Recipe(
        name=model_name(_name), chapter=4, train=train_meta_learner_recipe, build=build_meta_learner,
        config=asdict(_config), full_config=asdict(META_LEARNERS_FULL[_name]), seed=0, version=1,
        evaluate=evaluate_meta_learner,
        description=f"{_name} meta-trained on Glyphs {_config.n_way}-way {_config.k_shot}-shot episodes"))
store.register(store.Recipe(
    name=EMBEDDING_MODEL_NAME, chapter=4, train=train_embedding_recipe, build=build_embedding,
    config=asdict(EmbeddingConfig()), seed=0, version=1, evaluate=evaluate_embedding,
    description="Conv-4 trained to classify every character of the Glyphs meta-training alphabets"))
store.register(store.Recipe(
    name=SINE_MAML_MODEL_NAME, chapter=4, train=train_sinusoid_recipe, build=build_sine_network,
    config=asdict(SinusoidConfig()), full_config=asdict(SinusoidConfig(outer_steps=SINE_PAPER_STEPS)), seed=0,
    version=1, description="MAML on sinusoids, K = 10"))
store.register(store.Recipe(
    name=SINE_PRETRAINED_MODEL_NAME, chapter=4, train=train_sinusoid_recipe, build=build_sine_network,
    config=asdict(SinusoidConfig(pretrain=True)),
    full_config=asdict(SinusoidConfig(outer_steps=SINE_PAPER_STEPS, pretrain=True)), seed=0, version=2,
    description="the same network pre-trained on pooled sinusoids, as many steps as MAML"))


store.register(store.Recipe(
    name=STABILITY_MODEL_NAME, chapter=4, train=train_stability_recipe, build=build_stability_network,
    config=asdict(StabilityConfig()), seed=0, version=1,
    description="MAML and MAML++ (five inner steps, small Conv-4) over five seeds and two inner rates"))


def load_meta_learner(method_name: str, device: torch.device | None = None) -> store.StoredModel:
    """The stored meta-learner ``method_name`` (a key of :data:`META_LEARNERS`)."""
    return store.load(model_name(method_name), device)
