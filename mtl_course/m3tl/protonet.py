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
    """Chapter 8's M3TL recipe (:class:`.stored.M3TLRecipe`), the seeds, and ProtoNet's episodes.

    Chapter 4 trains ProtoNet on 20-way episodes (more ways than at test, as
    Snell et al. advise). Five 20-way 1-shot episodes with 5 queries hold 600
    examples, as many as one outer step of M3TL (10 episodes of 30 examples
    for each of its two source tasks).
    """

    seeds: int = 5
    train_way: int = 20
    train_episodes: int = 5

    def __post_init__(self) -> None:
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


def train_protonet(c: ProtoNetStudy, seed: int, train: MultiModalSet, val: MultiModalSet, image_encoder: nn.Module,
                   device: torch.device, max_steps: int | None = None) -> tuple[M3TLNet, dict, list[float]]:
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
                              outer_steps=steps, meta_lr=c.meta_lr, metric=None, backend="loop",
                              val_episodes=val_episodes, eval_every=c.eval_every, desc="ProtoNet")
    record = {} if max_steps is not None else {"val_loss": min(history.val_metric), "steps": history.best_step}
    return net, record, history.loss


def _empty_network(c: ProtoNetStudy, seed: int) -> M3TLNet:
    return as_kept(protonet_network(c, {"image": (1, 28, 28), "profile": (56,)}, untrained_image_encoder(), seed))


def build_protonet_networks(config: dict) -> ReductionNetworks:
    """The untrained networks of the stored ProtoNets, for :func:`mtl_course.store.load` to fill in."""
    c = ProtoNetStudy(**config)
    return ReductionNetworks({run_key(s): _empty_network(c, s) for s in range(c.seeds)})


def train_protonet_recipe(config: dict, seed: int, max_steps: int | None = None, device: torch.device | None = None,
                          checkpoint: runtime.Checkpoint | None = None, reverse: bool = False) -> store.Trained:
    """The store's recipe: one ProtoNet for each of seeds ``seed .. seed + seeds - 1``.

    As for the reductions study, each finished network is kept beside
    ``checkpoint`` and ``reverse=True`` trains from the other end. With
    ``max_steps``, only the first steps of the first network.
    """
    c = ProtoNetStudy(**config)
    device = device or runtime.get_device()
    glyphs = load_glyphs(seed=0)
    encoder = transfer.source_model(transfer.SourceConfig(), data=glyphs, device=device).model  # for its shape
    train = chapter_data(glyphs, "train", c.train_chars, c.drawings)
    val = chapter_data(glyphs, "val", c.val_chars, c.drawings)
    with runtime.num_threads_at_most(1):  # small networks: one thread is fastest
        if max_steps is not None:
            net, _, losses = train_protonet(c, seed, train, val, encoder, device, max_steps)
            return store.Trained(net, {}, losses)

        def train_one(key: str) -> dict:
            started = time.perf_counter()
            net, record, losses = train_protonet(c, int(key.rsplit(" ", 1)[1]), train, val, encoder, device)
            return {"state": {k: v.detach().cpu() for k, v in as_kept(net).state_dict().items()},
                    "record": {**record, "loss": losses, "seconds": time.perf_counter() - started}}

        keys = [run_key(s) for s in range(seed, seed + c.seeds)]
        done = store.cached_runs(keys, train_one, checkpoint, reverse)
    networks = build_protonet_networks({**asdict(c)})
    for key, result in done.items():
        networks.network(key).load_state_dict(result["state"])
    runs = {key: {k: v for k, v in result["record"].items() if k != "loss"} for key, result in done.items()}
    metrics = {"val_loss_protonet": float(np.mean([r["val_loss"] for r in runs.values()]))}
    extra = {"runs": runs, "run_seconds": sum(r["seconds"] for r in runs.values())}
    return store.Trained(networks.to(device).eval(), metrics, done[keys[0]]["record"]["loss"], extra)


PROTONET_RECIPE = store.register(store.Recipe(
    name=PROTONET_MODEL_NAME, chapter=8, train=train_protonet_recipe, build=build_protonet_networks,
    config=asdict(ProtoNetStudy()), seed=0, version=1,
    description="Chapter 4's ProtoNet on Chapter 8's two modalities and source alphabets, five seeds"))
