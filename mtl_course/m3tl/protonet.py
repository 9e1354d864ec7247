"""Chapter 4's best few-shot learner, the prototypical network, on Chapter 8's data and budget.

Section 8.9 compares M3TL with its own parts (:mod:`.reductions`) and with
the best method of the earlier chapters. For few-shot classification of new
characters that is ProtoNet (Chapter 4). This module trains it on what M3TL
sees: the meta-training alphabets of Chapter 8, both modalities, for M3TL's
number of outer steps and number of examples per step. Its network is the
MTL reduction's (:func:`.reductions.variant_network`): both encoders from
scratch (the image's a Conv-4), the fusion layer and the shared backbone,
whose output is the embedding that prototypes are taken in.

At meta-test ProtoNet classifies by the nearest prototype, its own rule;
for the regression tasks, which prototypes cannot serve, a head adapts on
its fixed embedding as for every network of the study
(:func:`.reductions.meta_test_heads` with ``prototypes=True``).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from .. import meta, runtime, store, transfer
from ..data import MultiModalSet, TaskEpisodes, load_glyphs
from .config import task
from .network import M3TLNet
from .reductions import ReductionNetworks, as_kept, put_head, variant_network
from .stored import SHOTS, M3TLRecipe, chapter_data, untrained_image_encoder

PROTONET_MODEL_NAME = "glyphs-m3tl-protonet"


@dataclass(frozen=True)
class ProtoNetStudy(M3TLRecipe):
    """Chapter 8's data, network sizes and budget (:class:`.stored.M3TLRecipe`), the seeds, and ProtoNet's training.

    Chapter 4 trains ProtoNet on 20-way episodes (more ways than at test, as
    Snell et al. advise). Five 20-way 1-shot episodes with 5 queries hold 600
    examples, as many as one outer step of M3TL (10 episodes of 30 examples
    for each of its two source tasks). ProtoNet learns every layer from
    scratch and overfits the training drawings within a few hundred steps,
    so it is validated every ``eval_every`` = 50 steps, and its learning rate
    is chosen from ``meta_lrs`` on the first seed (M3TL's ``meta_lr`` and
    ``inner_steps`` are not used: ProtoNet has no inner loop).
    """

    eval_every: int = 50
    seeds: int = 5
    train_way: int = 20
    train_episodes: int = 5
    meta_lrs: tuple[float, ...] = (2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3)

    def __post_init__(self) -> None:
        object.__setattr__(self, "meta_lrs", tuple(self.meta_lrs))  # a config read back from JSON gives a list
        if self.train_way < SHOTS["character"][0]:
            raise ValueError(f"ProtoNet trains on at least the test's {SHOTS['character'][0]} ways, "
                             f"got train_way={self.train_way}")


def run_key(seed: int) -> str:
    """The name of one stored ProtoNet, e.g. ``"ProtoNet 3"``."""
    return f"ProtoNet {seed}"


class Embedding(nn.Module):
    """``net.embed`` as a module of its own: the function ProtoNet takes prototypes in."""

    def __init__(self, net: M3TLNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.embed(x)


def protonet_network(c: ProtoNetStudy, shapes: dict, image_encoder: nn.Module, seed: int) -> M3TLNet:
    """The untrained network: the MTL reduction's layers, with a 5-way character head for meta-test."""
    net = variant_network("MTL", c, shapes, image_encoder, SHOTS["character"][0], seed)
    put_head(net, task("character", "classification", SHOTS["character"][0]))
    return net


def train_protonet(c: ProtoNetStudy, seed: int, lr: float, train: MultiModalSet, val: MultiModalSet,
                   image_encoder: nn.Module, device: torch.device,
                   max_steps: int | None = None) -> tuple[M3TLNet, dict, list[float]]:
    """One ProtoNet, meta-trained on character episodes and selected on validation: ``(network, record, losses)``.

    The state kept is the one with the lowest query loss on ``c.val_episodes``
    5-way 1-shot character episodes of the validation alphabets (seed 100,
    those that select M3TL).
    """
    net = protonet_network(c, train.modality_shapes, image_encoder, seed).to(device)
    ways, shots = SHOTS["character"]
    sampler = TaskEpisodes(train, "character", n_way=c.train_way, k_shot=shots, q_queries=5,
                           modalities=net.modalities, seed=seed)
    val_episodes = None
    if max_steps is None:
        val_episodes = TaskEpisodes(val, "character", n_way=ways, k_shot=shots, q_queries=5,
                                    modalities=net.modalities, seed=100).episodes(c.val_episodes)
    steps = c.outer_steps if max_steps is None else min(max_steps, c.outer_steps)
    # a second-order-free objective: the tasks of a meta-batch run one by one, as BatchNorm needs
    history = meta.meta_train(Embedding(net), lambda: sampler.batch(c.train_episodes), method="protonet",
                              outer_steps=steps, meta_lr=lr, metric=None, backend="loop",
                              val_episodes=val_episodes, eval_every=c.eval_every, desc="ProtoNet")
    record = {} if max_steps is not None else {"val_loss": min(history.val_metric), "steps": history.best_step,
                                                "meta_lr": lr}
    return net, record, history.loss


def _empty_network(c: ProtoNetStudy, seed: int) -> M3TLNet:
    return as_kept(protonet_network(c, {"image": (1, 28, 28), "profile": (56,)}, untrained_image_encoder(), seed))


def build_protonet_networks(config: dict) -> ReductionNetworks:
    """The untrained networks of the stored ProtoNets, for :func:`mtl_course.store.load` to fill in."""
    c = ProtoNetStudy(**config)
    return ReductionNetworks({run_key(s): _empty_network(c, s) for s in range(c.seeds)})


def part_name(seed: int, lr: float) -> str:
    """The name of one training run of the recipe, e.g. ``"ProtoNet 0 lr 0.001"``."""
    return f"{run_key(seed)} lr {lr:g}"


def train_run(c: ProtoNetStudy, seed: int, lr: float, train: MultiModalSet, val: MultiModalSet,
              image_encoder: nn.Module, device: torch.device) -> dict:
    """One run of the recipe as :func:`mtl_course.store.cached_runs` keeps it: the weights and the record."""
    started = time.perf_counter()
    net, record, losses = train_protonet(c, seed, lr, train, val, image_encoder, device)
    return {"state": {k: v.detach().cpu() for k, v in as_kept(net).state_dict().items()},
            "record": {**record, "loss": losses, "seconds": time.perf_counter() - started}}


def train_protonet_recipe(config: dict, seed: int, max_steps: int | None = None, device: torch.device | None = None,
                          checkpoint: runtime.Checkpoint | None = None, reverse: bool = False) -> store.Trained:
    """The store's recipe: one ProtoNet for each of seeds ``seed .. seed + seeds - 1``.

    First the learning rate is chosen on seed ``seed`` (the lowest
    validation loss of the runs with each of ``meta_lrs``), then the other
    seeds are trained with it. As for the reductions study, each finished run
    is kept beside ``checkpoint`` and ``reverse=True`` trains from the other
    end. With ``max_steps``, only the first steps of the first run.
    """
    c = ProtoNetStudy(**config)
    device = device or runtime.get_device()
    glyphs = load_glyphs(seed=0)
    encoder = transfer.source_model(transfer.SourceConfig(), data=glyphs, device=device).model  # for its shape
    train = chapter_data(glyphs, "train", c.train_chars, c.drawings)
    val = chapter_data(glyphs, "val", c.val_chars, c.drawings)

    def runs_of(jobs: list[tuple[int, float]]) -> dict[tuple[int, float], dict]:
        keys = {part_name(s, lr): (s, lr) for s, lr in jobs}
        done = store.cached_runs(list(keys), lambda key: train_run(c, *keys[key], train, val, encoder, device),
                                 checkpoint, reverse)
        return {keys[key]: result for key, result in done.items()}

    with runtime.num_threads_at_most(1):  # small networks: one thread is fastest
        if max_steps is not None:
            net, _, losses = train_protonet(c, seed, c.meta_lrs[0], train, val, encoder, device, max_steps)
            return store.Trained(net, {}, losses)
        tried = {lr: r for (_, lr), r in runs_of([(seed, lr) for lr in c.meta_lrs]).items()}
        choice = min(c.meta_lrs, key=lambda lr: tried[lr]["record"]["val_loss"])
        done = {seed: tried[choice]} | {s: r for (s, _), r in
                                        runs_of([(s, choice) for s in range(seed + 1, seed + c.seeds)]).items()}
    networks = build_protonet_networks({**asdict(c)})
    for s, result in done.items():
        networks.network(run_key(s)).load_state_dict(result["state"])
    runs = {run_key(s): {k: v for k, v in r["record"].items() if k != "loss"} for s, r in done.items()}
    metrics = {"val_loss_protonet": float(np.mean([r["val_loss"] for r in runs.values()]))}
    extra = {"runs": runs, "meta_lr": choice,
             "meta_lr_choice": {f"{lr:g}": r["record"]["val_loss"] for lr, r in tried.items()},
             "run_seconds": sum(r["record"]["seconds"] for r in tried.values())
             + sum(r["record"]["seconds"] for s, r in done.items() if s != seed)}
    first_run = tried[c.meta_lrs[0]]  # the run that the recipe's max_steps call starts again
    return store.Trained(networks.to(device).eval(), metrics, first_run["record"]["loss"], extra)


PROTONET_RECIPE = store.register(store.Recipe(
    name=PROTONET_MODEL_NAME, chapter=8, train=train_protonet_recipe, build=build_protonet_networks,
    config=asdict(ProtoNetStudy()), seed=0, version=1,
    description="Chapter 4's ProtoNet on Chapter 8's two modalities and source alphabets, five seeds"))
