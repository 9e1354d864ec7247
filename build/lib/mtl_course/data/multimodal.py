"""A multi-modal, multi-task Glyphs set: two complementary views of one drawing, six heterogeneous labels.

The review's generic network (Upadhyay et al., 2021, Fig. 6) takes several
*modalities* and serves *heterogeneous* tasks. This module builds such a set
offline from :func:`~mtl_course.data.load_glyphs`. Every Glyphs drawing is
first turned by a random angle and shrunk by a random zoom factor; then two
modalities are derived from the transformed drawing:

* ``"image"`` -- the transformed drawing with a grey square **occluder** at a
  random place (grey, not black, so that a model can see where information is
  missing);
* ``"profile"`` -- its noisy **ink profile**: the amount of ink in every row
  and every column of the *whole* (un-occluded) drawing, plus Gaussian noise.
  It sees what the occluder hides, but only as two 1-D projections.

Neither modality is the label: the profile is a blurred summary of the same
picture, and names (which contain the script's name, e.g. ``GREEK SMALL
LETTER ALPHA``) are deliberately *not* used. Six tasks, of three head kinds
(:data:`TASKS`):

* ``character`` -- which character (classification);
* ``alphabet`` -- which script (classification);
* ``ink`` -- how much ink the transformed drawing has (its mean grey level, times 10, minus 1; regression);
* ``angle`` -- the angle the drawing was turned by, divided by ``max_angle`` (regression, in ``[-1, 1]``);
* ``zoom`` -- the zoom factor, rescaled to ``[-1, 1]`` (regression);
* ``upright`` -- the drawing before it was turned and zoomed (dense: a whole image).

Everything is packed into one flat tensor per example with :meth:`MultiModalSet.packed`,
so episodes, :func:`~mtl_course.training.fit` and ``torch.func.vmap`` handle
multi-modal inputs unchanged; :class:`mtl_course.m3tl.M3TLNet` unpacks them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import runtime
from .episodes import Episode, LabelledSet

MODALITIES = ("image", "profile")
"""The two views of a drawing, in packing order."""

TASKS = {"character": "classification", "alphabet": "classification", "ink": "regression", "angle": "regression",
         "zoom": "regression", "upright": "dense"}
"""Every task of :func:`multimodal_glyphs` and the kind of head it needs."""

GREY = 0.5
"""Grey level of the occluder (the background is 0 and ink is up to 1)."""


@dataclass
class MultiModalSet:
    """Several modalities of the same examples with several heterogeneous targets.

    ``inputs[m][i]`` is modality ``m`` of example ``i``; ``targets[t][i]`` its
    target for task ``t``, whose head kind is ``kinds[t]``. ``classes[i]``
    (character id), ``alphabets[i]`` (script id) and ``drawings[i]`` say where
    example ``i`` came from; ``class_names`` hold the bare characters only.
    """

    inputs: dict[str, torch.Tensor]
    targets: dict[str, torch.Tensor]
    kinds: dict[str, str]
    classes: torch.Tensor
    alphabets: torch.Tensor
    drawings: torch.Tensor
    class_names: list[str]
    alphabet_names: list[str]
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ValueError("a MultiModalSet needs at least one modality")
        if set(self.targets) != set(self.kinds):
            raise ValueError(f"targets {sorted(self.targets)} and kinds {sorted(self.kinds)} must name the same tasks")
        n = len(self.classes)
        for what, tensors in (("modality", self.inputs), ("task", self.targets)):
            for name, value in tensors.items():
                if len(value) != n:
                    raise ValueError(f"{what} {name!r} has {len(value)} rows for {n} examples")

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def modalities(self) -> list[str]:
        return list(self.inputs)

    @property
    def modality_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of one example of each modality, e.g. ``{"image": (1, 28, 28), "profile": (56,)}``."""
        return {m: tuple(x.shape[1:]) for m, x in self.inputs.items()}

    def _check_modalities(self, modalities: Sequence[str] | None) -> list[str]:
        names = self.modalities if modalities is None else list(modalities)
        unknown = [m for m in names if m not in self.inputs]
        if unknown or not names:
            raise ValueError(f"unknown modality {unknown or names}; this set has {self.modalities}")
        return names

    def packed(self, modalities: Sequence[str] | None = None) -> torch.Tensor:
        """The chosen modalities (default all), each flattened, side by side: shape ``(N, D)``.

        :class:`mtl_course.m3tl.M3TLNet` splits such rows back into modalities,
        so a multi-modal example travels through samplers, loaders and ``vmap``
        as one tensor.
        """
        names = self._check_modalities(modalities)
        return torch.cat([self.inputs[m].reshape(len(self), -1) for m in names], dim=1)

    def subset(self, rows: torch.Tensor | np.ndarray | Sequence[int]) -> "MultiModalSet":
        """The examples at ``rows`` (all modalities and tasks)."""
        rows = torch.as_tensor(np.asarray(rows), dtype=torch.long)
        return MultiModalSet({m: x[rows] for m, x in self.inputs.items()}, {t: y[rows] for t, y in self.targets.items()},
                             dict(self.kinds), self.classes[rows], self.alphabets[rows], self.drawings[rows],
                             list(self.class_names), list(self.alphabet_names), dict(self.info))

    def with_alphabets(self, names: Sequence[str]) -> "MultiModalSet":
        """The examples of the named scripts only (e.g. the meta-test alphabets)."""
        unknown = [a for a in names if a not in self.alphabet_names]
        if unknown:
            raise ValueError(f"unknown alphabet(s) {unknown}; this set has {self.alphabet_names}")
        ids = torch.tensor([self.alphabet_names.index(a) for a in names])
        return self.subset(torch.nonzero(torch.isin(self.alphabets, ids)).flatten())

    def drop(self, modality: str) -> "MultiModalSet":
        """The same set with one modality replaced by its mean example: its information is gone (question Q5)."""
        self._check_modalities([modality])
        inputs = dict(self.inputs)
        inputs[modality] = inputs[modality].mean(0, keepdim=True).expand_as(inputs[modality]).clone()
        return MultiModalSet(inputs, dict(self.targets), dict(self.kinds), self.classes, self.alphabets, self.drawings,
                             list(self.class_names), list(self.alphabet_names), dict(self.info))

    def labelled_set(self, modalities: Sequence[str] | None = None) -> LabelledSet:
        """The packed inputs labelled by character, for :class:`~mtl_course.data.EpisodeSampler` and ``fit``."""
        return LabelledSet(self.packed(modalities), self.classes, list(self.class_names),
                           [self.alphabet_names[a] for a in self._alphabet_of_class()])

    def _alphabet_of_class(self) -> list[int]:
        of_class = torch.full((len(self.class_names),), -1, dtype=torch.long)
        of_class[self.classes] = self.alphabets
        return of_class.tolist()


def transform(images: torch.Tensor, degrees: torch.Tensor, zoom: torch.Tensor) -> torch.Tensor:
    """Turn each image ``(N, C, H, W)`` counter-clockwise by ``degrees`` and shrink it by ``zoom`` (<= 1).

    Bilinear, zero fill, about the image centre (the same convention as
    :func:`mtl_course.multitask.rotate`, which this is for ``zoom = 1``).
    """
    if images.dim() != 4 or degrees.shape != (len(images),) or zoom.shape != (len(images),):
        raise ValueError(f"need images (N, C, H, W) and one angle and zoom per image, got {tuple(images.shape)}, "
                         f"{tuple(degrees.shape)} and {tuple(zoom.shape)}")
    if bool((zoom <= 0).any()):
        raise ValueError("zoom factors must be positive")
    a = torch.deg2rad(degrees.float())
    cos, sin, zero = torch.cos(a) / zoom, torch.sin(a) / zoom, torch.zeros_like(a)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], -2)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp(0, 1)


def occlude(images: torch.Tensor, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Cover a ``size`` x ``size`` square at a uniformly random place of each image with grey (:data:`GREY`).

    Returns the occluded images and the ``(row, column)`` of each square's corner.
    """
    n, _, h, w = images.shape
    if not 0 <= size <= min(h, w):
        raise ValueError(f"the occluder side must be in 0..{min(h, w)}, got {size}")
    corner = torch.stack([torch.randint(0, h - size + 1, (n,), generator=generator),
                          torch.randint(0, w - size + 1, (n,), generator=generator)], 1)
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    r, c = corner[:, 0].view(n, 1, 1), corner[:, 1].view(n, 1, 1)
    mask = ((rows >= r) & (rows < r + size) & (cols >= c) & (cols < c + size)).unsqueeze(1)
    return torch.where(mask, torch.full_like(images, GREY), images), corner


def ink_profile(images: torch.Tensor, noise: float, generator: torch.Generator) -> torch.Tensor:
    """The ink in every row and every column of each image, ``(N, H + W)``, plus Gaussian noise of std ``noise``.

    The sums are divided by ``sqrt(H W)`` so that typical values are of order one.
    """
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    _, _, h, w = images.shape
    profile = torch.cat([images.sum(dim=(1, 3)), images.sum(dim=(1, 2))], dim=1) / math.sqrt(h * w)
    return profile + noise * torch.randn(profile.shape, generator=generator)


def multimodal_glyphs(
    glyphs: LabelledSet | None = None,
    alphabets: Sequence[str] | None = None,
    max_per_alphabet: int | None = None,
    *,
    max_angle: float = 30.0,
    zoom: tuple[float, float] = (0.7, 1.0),
    occluder: int = 14,
    profile_noise: float = 0.1,
    seed: int = 0,
) -> MultiModalSet:
    """The two-modality, six-task Glyphs set described in the module docstring.

    ``glyphs`` defaults to :func:`~mtl_course.data.load_glyphs`; ``alphabets``
    keeps the named scripts (default all) and ``max_per_alphabet`` the first
    characters of each. Every drawing is turned by an angle uniform in
    ``[-max_angle, max_angle]`` degrees and shrunk by a factor uniform in
    ``zoom``; the image is occluded by an ``occluder`` x ``occluder`` grey
    square; the profile gets noise of std ``profile_noise``. Deterministic in
    ``seed``.
    """
    if glyphs is None:
        from .glyphs import load_glyphs

        glyphs = load_glyphs()
    if glyphs.class_groups is None:
        raise ValueError("multimodal_glyphs needs a labelled set with alphabets (class_groups), e.g. load_glyphs()")
    if not 0 < max_angle <= 180:
        raise ValueError(f"max_angle must be in (0, 180] degrees, got {max_angle}")
    if not 0 < zoom[0] < zoom[1] <= 1:
        raise ValueError(f"zoom must be a range (low, high) with 0 < low < high <= 1, got {zoom}")
    names = glyphs.groups if alphabets is None else list(alphabets)
    unknown = [a for a in names if a not in glyphs.groups]
    if unknown:
        raise ValueError(f"unknown alphabet(s) {unknown}; Glyphs has {glyphs.groups}")
    chosen = []
    for a in names:
        members = [c for c, g in enumerate(glyphs.class_groups) if g == a]
        chosen += members[:max_per_alphabet] if max_per_alphabet is not None else members
    by_class = glyphs.indices_by_class()
    rows = torch.as_tensor(np.concatenate([by_class[c] for c in chosen]))
    classes = torch.as_tensor(np.concatenate([[i] * len(by_class[c]) for i, c in enumerate(chosen)]))
    drawings = torch.as_tensor(np.concatenate([np.arange(len(by_class[c])) for c in chosen]))
    alphabet_of = torch.tensor([names.index(glyphs.class_groups[c]) for c in chosen])

    gen = runtime.generator(seed)
    n = len(rows)
    angle = (2 * torch.rand(n, generator=gen) - 1) * max_angle
    factor = zoom[0] + (zoom[1] - zoom[0]) * torch.rand(n, generator=gen)
    upright = glyphs.X[rows]
    turned = transform(upright, angle, factor)
    image, corner = occlude(turned, occluder, gen)
    profile = ink_profile(turned, profile_noise, gen)
    mid, half = (zoom[0] + zoom[1]) / 2, (zoom[1] - zoom[0]) / 2
    targets = {"character": classes, "alphabet": alphabet_of[classes], "ink": turned.mean(dim=(1, 2, 3)) * 10 - 1,
               "angle": angle / max_angle,
               "zoom": (factor - mid) / half, "upright": upright}
    info = {"max_angle": max_angle, "zoom": zoom, "occluder": occluder, "profile_noise": profile_noise,
            "occluder_corner": corner, "seed": seed}
    return MultiModalSet({"image": image, "profile": profile}, targets, dict(TASKS), classes, alphabet_of[classes],
                         drawings, [glyphs.class_names[c][0] for c in chosen], names, info)


class TaskEpisodes:
    """Few-shot episodes of one task of a :class:`MultiModalSet` (any head kind).

    Each episode draws ``n_way`` groups -- characters, or scripts for the
    ``alphabet`` task -- and ``k_shot`` support and ``q_queries`` query examples
    from each. Classification targets are remapped to ``0 .. n_way-1`` (a new
    labelling per episode, as in N-way K-shot learning); regression and dense
    targets are the examples' own. Inputs are :meth:`MultiModalSet.packed`
    over ``modalities``. The sampler owns its generator: the same seed gives
    the same episodes.
    """

    def __init__(self, data: MultiModalSet, task: str, n_way: int = 5, k_shot: int = 1, q_queries: int = 5,
                 modalities: Sequence[str] | None = None, seed: int = 0) -> None:
        if task not in data.kinds:
            raise ValueError(f"unknown task {task!r}; this set has {list(data.kinds)}")
        for name, value, low in (("n_way", n_way, 1), ("k_shot", k_shot, 1), ("q_queries", q_queries, 1)):
            if not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        self.data, self.task, self.kind = data, task, data.kinds[task]
        if self.kind == "classification" and n_way < 2:
            raise ValueError(f"a classification episode needs n_way >= 2, got {n_way}")
        self.X = data.packed(modalities)
        group = data.alphabets if task == "alphabet" else data.classes
        need = k_shot + q_queries
        pools = {g: np.flatnonzero(group.numpy() == g) for g in torch.unique(group).tolist()}
        self._groups = [g for g, rows in pools.items() if len(rows) >= need]
        self._pools = [pools[g] for g in self._groups]
        if len(self._pools) < n_way:
            raise ValueError(f"task {task!r}: only {len(self._pools)} groups have {need} examples, "
                             f"fewer than n_way={n_way}; lower n_way, k_shot or q_queries")
        self.n_way, self.k_shot, self.q_queries = int(n_way), int(k_shot), int(q_queries)
        self.rng = runtime.rng(seed)

    def sample(self) -> Episode:
        """One episode; support and query are ordered by group."""
        chosen = self.rng.choice(len(self._pools), size=self.n_way, replace=False)
        support, query = [], []
        for g in chosen:
            picked = self.rng.choice(self._pools[g], size=self.k_shot + self.q_queries, replace=False)
            support.append(picked[: self.k_shot])
            query.append(picked[self.k_shot :])
        s, q = torch.from_numpy(np.concatenate(support)), torch.from_numpy(np.concatenate(query))
        if self.kind == "classification":
            labels = torch.arange(self.n_way)
            sy, qy = labels.repeat_interleave(self.k_shot), labels.repeat_interleave(self.q_queries)
        else:
            y = self.data.targets[self.task]
            sy, qy = y[s], y[q]
        return Episode(self.X[s], sy, self.X[q], qy, classes=[self._groups[g] for g in chosen], info={"task": self.task})

    def batch(self, num_tasks: int) -> list[Episode]:
        """A meta-batch of ``num_tasks`` episodes."""
        return [self.sample() for _ in range(num_tasks)]

    def episodes(self, num_episodes: int) -> list[Episode]:
        """``num_episodes`` episodes (e.g. the fixed test episodes of a table)."""
        return self.batch(num_episodes)


__all__ = ["GREY", "MODALITIES", "MultiModalSet", "TASKS", "TaskEpisodes", "ink_profile", "multimodal_glyphs",
           "occlude", "transform"]
