"""Multi-task data: one input, several heterogeneous targets.

* :func:`glyph_tasks` — from one rotated Glyphs drawing predict its **alphabet**
  and its **character** (classification), the **angle** it was turned by
  (regression) and the **clean** upright glyph (a dense, image-shaped output);
* :func:`glyph_alphabet_tasks` — one character-recognition task per alphabet,
  each labelled only on its own alphabet's drawings (little data per task);
* :func:`glyph_overlay` — two glyphs drawn over each other, one to the upper
  left and one to the lower right: predict the **left** and the **right**
  character (the MultiMNIST construction of Sener & Koltun, 2018);
* :func:`noisy_regression` — two regression tasks with noise scales 10 and 1,
  on which uncertainty weighting should learn those scales.

Everything is generated offline, fast and deterministically from a seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import runtime
from ..data import LabelledSet
from ..metrics import accuracy, mean_absolute_error

TASK_KINDS = ("classification", "regression", "dense")
KIND_LOSS = {"classification": F.cross_entropy, "regression": F.mse_loss, "dense": F.mse_loss}
"""Each task kind's training loss on labelled outputs: the one place that maps a kind to its loss."""
KIND_METRIC = {"classification": accuracy, "regression": mean_absolute_error, "dense": mean_absolute_error}
"""Each task kind's metric: accuracy (higher is better) or mean absolute error (lower is better)."""


@dataclass(frozen=True)
class TaskSpec:
    """What one task predicts and how it is scored.

    ``kind`` fixes the loss and the metric: cross-entropy and accuracy (higher
    is better) for ``"classification"``; squared error for training and mean
    absolute error (lower is better) for ``"regression"`` and ``"dense"``.
    ``out`` is the number of classes, ``1``, or the output shape.
    """

    name: str
    kind: str
    out: int | tuple[int, ...]

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {TASK_KINDS}, got {self.kind!r}")

    @property
    def higher_is_better(self) -> bool:
        return self.kind == "classification"

    @property
    def metric_name(self) -> str:
        return "accuracy" if self.kind == "classification" else "MAE"

    def labelled(self, target: torch.Tensor) -> torch.Tensor:
        """Which rows of ``target`` carry a label: missing labels are ``-1`` (classes) or NaN (numbers)."""
        if self.kind == "classification":
            return target >= 0
        return ~torch.isnan(target.reshape(len(target), -1)).any(dim=1)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy or mean squared error over the labelled rows (0, still differentiable, if there are none)."""
        keep = self.labelled(target)
        if not bool(keep.all()):
            output, target = output[keep], target[keep]
        if len(target) == 0:
            return output.sum() * 0.0
        return KIND_LOSS[self.kind](output, target)

    def metric(self, output: torch.Tensor, target: torch.Tensor) -> float:
        """Accuracy, or mean absolute error, over the labelled rows."""
        keep = self.labelled(target)
        output, target = output[keep], target[keep]
        if len(target) == 0:
            raise ValueError(f"task {self.name!r} has no labelled examples to score")
        return KIND_METRIC[self.kind](output, target)


@dataclass
class MultiTaskSet:
    """Inputs ``X`` with one target tensor per task: ``targets[name][i]`` belongs to ``X[i]``.

    ``groups[i]`` is the class (e.g. the character) example ``i`` was drawn
    from and ``drawings[i]`` which drawing of it; :meth:`split` uses them to
    split by drawing, so every class appears in every part.
    """

    X: torch.Tensor
    targets: dict[str, torch.Tensor]
    tasks: dict[str, TaskSpec]
    groups: torch.Tensor | None = None
    drawings: torch.Tensor | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if set(self.targets) != set(self.tasks):
            raise ValueError(f"targets {sorted(self.targets)} and tasks {sorted(self.tasks)} must name the same tasks")
        for name, y in self.targets.items():
            if len(y) != len(self.X):
                raise ValueError(f"task {name!r} has {len(y)} targets for {len(self.X)} inputs")

    def __len__(self) -> int:
        return len(self.X)

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    @property
    def higher_is_better(self) -> dict[str, bool]:
        return {name: spec.higher_is_better for name, spec in self.tasks.items()}

    def for_task(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(X, y)`` of the examples labelled for one task, e.g. for :func:`mtl_course.training.fit`."""
        if name not in self.tasks:
            raise KeyError(f"no task {name!r}; tasks are {self.task_names}")
        keep = self.tasks[name].labelled(self.targets[name])
        if bool(keep.all()):
            return self.X, self.targets[name]
        return self.X[keep], self.targets[name][keep]

    def num_labelled(self) -> dict[str, int]:
        """How many examples carry a label for each task."""
        return {n: int(spec.labelled(self.targets[n]).sum()) for n, spec in self.tasks.items()}

    def one_label_each(self, seed: int = 0) -> "MultiTaskSet":
        """The same inputs with every example labelled for **one** task only (balanced, at random).

        This is the review's multi-task setting with a training set ``D_i`` per
        task (Eq. 2): each task sees only its share of the examples, while a
        shared trunk learns from all of them.
        """
        T = len(self.tasks)
        rng = runtime.rng(seed)
        owner = torch.as_tensor(rng.permutation(np.arange(len(self)) % T))
        targets = {}
        for k, (name, spec) in enumerate(self.tasks.items()):
            y = self.targets[name].clone()
            y[owner != k] = -1 if spec.kind == "classification" else float("nan")
            targets[name] = y
        return MultiTaskSet(self.X, targets, dict(self.tasks), self.groups, self.drawings, dict(self.info))

    def only(self, names: Sequence[str]) -> "MultiTaskSet":
        """The same examples with a subset of the tasks."""
        missing = [n for n in names if n not in self.tasks]
        if missing:
            raise KeyError(f"no task(s) {missing}; tasks are {self.task_names}")
        return MultiTaskSet(self.X, {n: self.targets[n] for n in names}, {n: self.tasks[n] for n in names},
                            self.groups, self.drawings, dict(self.info))

    def subset(self, index: torch.Tensor | np.ndarray | Sequence[int]) -> "MultiTaskSet":
        """The examples at ``index`` (all tasks)."""
        index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return MultiTaskSet(self.X[index], {n: y[index] for n, y in self.targets.items()}, dict(self.tasks),
                            pick(self.groups), pick(self.drawings), dict(self.info))

    def split(self, num_train: int, num_val: int) -> tuple["MultiTaskSet", "MultiTaskSet", "MultiTaskSet"]:
        """Train/val/test by drawing: the first ``num_train`` drawings of every class train, the next ``num_val`` validate, the rest test."""
        if self.drawings is None:
            raise ValueError("this set has no drawing index to split by; use subset() with your own indices")
        if num_train < 1 or num_val < 1 or num_train + num_val >= int(self.drawings.max()) + 1:
            raise ValueError(f"need 1 <= num_train, 1 <= num_val and num_train + num_val < "
                             f"{int(self.drawings.max()) + 1} drawings, got {num_train} and {num_val}")
        d = self.drawings
        parts = (d < num_train, (d >= num_train) & (d < num_train + num_val), d >= num_train + num_val)
        return tuple(self.subset(torch.nonzero(p).flatten()) for p in parts)


def rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Turn each image ``(N, C, H, W)`` counter-clockwise by its angle in degrees (bilinear, zero fill)."""
    if images.dim() != 4 or degrees.shape != (len(images),):
        raise ValueError(f"need images (N, C, H, W) and one angle per image, got {tuple(images.shape)} "
                         f"and {tuple(degrees.shape)}")
    a = torch.deg2rad(degrees.float())
    cos, sin, zero = torch.cos(a), torch.sin(a), torch.zeros_like(a)
    # grid_sample reads output pixel p from input position A p (x right, y down); this A turns the content
    # counter-clockwise on screen.
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], -2)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _glyph_set(glyphs: LabelledSet | None) -> LabelledSet:
    if glyphs is None:
        from ..data.glyphs import load_glyphs

        return load_glyphs()
    return glyphs


def pick_characters(glyphs: LabelledSet, num_alphabets: int, per_alphabet: int, seed: int = 0) -> list[int]:
    """Class ids of ``per_alphabet`` random characters from each of ``num_alphabets`` random alphabets."""
    groups = glyphs.groups
    if num_alphabets < 1 or num_alphabets > len(groups):
        raise ValueError(f"num_alphabets must be in 1..{len(groups)}, got {num_alphabets}")
    rng = runtime.rng(seed)
    chosen = []
    for a in sorted(rng.choice(len(groups), num_alphabets, replace=False)):
        members = [c for c, g in enumerate(glyphs.class_groups) if g == groups[a]]
        if per_alphabet > len(members):
            raise ValueError(f"alphabet {groups[a]!r} has only {len(members)} characters, asked for {per_alphabet}")
        chosen += sorted(int(c) for c in rng.choice(members, per_alphabet, replace=False))
    return chosen


def glyph_tasks(
    num_alphabets: int = 5,
    per_alphabet: int = 10,
    max_angle: float = 45.0,
    seed: int = 0,
    glyphs: LabelledSet | None = None,
    classes: Sequence[int] | None = None,
) -> MultiTaskSet:
    """Four heterogeneous tasks on rotated Glyphs drawings.

    Characters are ``classes`` or :func:`pick_characters`; every drawing of
    each is turned by an angle drawn uniformly from ``[-max_angle, max_angle]``
    degrees (on top of the drawings' own small jitter). Tasks:

    * ``alphabet`` — which alphabet (classification);
    * ``character`` — which character (classification);
    * ``angle`` — the angle applied, in units of ``max_angle`` (so in ``[-1, 1]``; regression);
    * ``clean`` — the character's clean upright glyph (:func:`~mtl_course.data.glyphs.render_glyph`; dense).
    """
    from ..data.glyphs import render_glyph

    glyphs = _glyph_set(glyphs)
    if max_angle <= 0 or max_angle > 180:
        raise ValueError(f"max_angle must be in (0, 180] degrees, got {max_angle}")
    classes = list(classes) if classes is not None else pick_characters(glyphs, num_alphabets, per_alphabet, seed)
    rows_of = glyphs.indices_by_class()
    rows = np.concatenate([rows_of[c] for c in classes])
    char_label = torch.as_tensor(np.concatenate([[i] * len(rows_of[c]) for i, c in enumerate(classes)]))
    drawing = torch.as_tensor(np.concatenate([np.arange(len(rows_of[c])) for c in classes]))
    alphabets = list(dict.fromkeys(glyphs.class_groups[c] for c in classes))
    alpha_of_char = torch.tensor([alphabets.index(glyphs.class_groups[c]) for c in classes])
    size = glyphs.X.shape[-1]
    clean = torch.stack([render_glyph(glyphs.class_names[c][0], size=size) for c in classes]).unsqueeze(1)
    gen = runtime.generator(seed)
    angle = (2 * torch.rand(len(rows), generator=gen) - 1) * max_angle
    X = rotate(glyphs.X[rows], angle).clamp(0, 1)
    tasks = {
        "alphabet": TaskSpec("alphabet", "classification", len(alphabets)),
        "character": TaskSpec("character", "classification", len(classes)),
        "angle": TaskSpec("angle", "regression", 1),
        "clean": TaskSpec("clean", "dense", (1, size, size)),
    }
    targets = {"alphabet": alpha_of_char[char_label], "character": char_label, "angle": angle / max_angle,
               "clean": clean[char_label]}
    info = {"alphabets": alphabets, "characters": [glyphs.class_names[c] for c in classes],
            "classes": classes, "max_angle": max_angle}
    return MultiTaskSet(X, targets, tasks, groups=char_label, drawings=drawing, info=info)


def glyph_alphabet_tasks(
    num_alphabets: int = 5,
    per_alphabet: int = 10,
    seed: int = 0,
    glyphs: LabelledSet | None = None,
) -> MultiTaskSet:
    """One task per alphabet: recognise its ``per_alphabet`` characters, from that alphabet's drawings only.

    Every drawing is labelled for the task of its own alphabet (characters
    ``0 .. per_alphabet-1``) and unlabelled (``-1``) for the others, so each
    task has its own small training set ``D_i`` and a shared trunk sees the
    drawings of all tasks: the setting of the review's Eq. 2. Characters come
    from :func:`pick_characters`.
    """
    glyphs = _glyph_set(glyphs)
    classes = pick_characters(glyphs, num_alphabets, per_alphabet, seed)
    rows_of = glyphs.indices_by_class()
    rows = np.concatenate([rows_of[c] for c in classes])
    char = torch.as_tensor(np.concatenate([[i] * len(rows_of[c]) for i, c in enumerate(classes)]))
    drawing = torch.as_tensor(np.concatenate([np.arange(len(rows_of[c])) for c in classes]))
    alphabets = list(dict.fromkeys(glyphs.class_groups[c] for c in classes))
    owner = char // per_alphabet
    targets = {a: torch.where(owner == k, char % per_alphabet, torch.full_like(char, -1)) for k, a in enumerate(alphabets)}
    tasks = {a: TaskSpec(a, "classification", per_alphabet) for a in alphabets}
    info = {"alphabets": alphabets, "characters": [glyphs.class_names[c] for c in classes], "classes": classes}
    return MultiTaskSet(glyphs.X[rows], targets, tasks, groups=char, drawings=drawing, info=info)


def glyph_overlay(
    num_characters: int = 10,
    num_images: int = 2000,
    drawings: Sequence[int] = range(20),
    spread: int = 12,
    shift: int = 2,
    seed: int = 0,
    glyphs: LabelledSet | None = None,
    alphabet: str = "Latin",
    classes: Sequence[int] | None = None,
) -> MultiTaskSet:
    """Two glyphs over each other; tasks ``left`` and ``right``: which character is where (MultiMNIST-style).

    As in the MultiMNIST set of Sener & Koltun (2018): on a canvas ``spread``
    pixels wider than a drawing, one drawing goes to the upper left corner and
    one to the lower right corner, each moved towards the centre by up to
    ``shift`` pixels; the two are overlaid (pixel-wise maximum) and the canvas
    is resized back to the drawings' size. Characters are ``classes`` or the
    first ``num_characters`` of ``alphabet`` (for Latin: A, B, C, ...); only the listed
    ``drawings`` of each are used, so sets made from disjoint drawings share no
    drawing (use this to build train/val/test sets).
    """
    glyphs = _glyph_set(glyphs)
    if num_images < 1 or shift < 0 or spread < 2 * shift:
        raise ValueError(f"need num_images >= 1, shift >= 0 and spread >= 2 * shift, got {num_images}, "
                         f"{shift} and {spread}")
    if classes is None:
        members = [c for c, g in enumerate(glyphs.class_groups) if g == alphabet]
        if len(members) < num_characters:
            raise ValueError(f"alphabet {alphabet!r} has {len(members)} characters, fewer than {num_characters}")
        classes = members[:num_characters]
    classes = list(classes)
    drawings = list(drawings)
    rows_of = glyphs.indices_by_class()
    if not drawings or max(drawings) >= min(len(rows_of[c]) for c in classes):
        raise ValueError(f"drawings must index existing drawings of every character, got {drawings}")
    pool = np.array([[rows_of[c][d] for d in drawings] for c in classes])  # (K, D) row ids
    rng = np.random.default_rng([runtime.shift_seed(seed), 1])
    labels = rng.integers(0, len(classes), size=(num_images, 2))
    pick = rng.integers(0, len(drawings), size=(num_images, 2))
    moves = rng.integers(0, shift + 1, size=(num_images, 4))
    size = glyphs.X.shape[-1]
    images = torch.zeros(num_images, 1, size + spread, size + spread)
    left = glyphs.X[pool[labels[:, 0], pick[:, 0]]]
    right = glyphs.X[pool[labels[:, 1], pick[:, 1]]]
    for i in range(num_images):
        r, c = int(moves[i, 0]), int(moves[i, 1])
        images[i, :, r : r + size, c : c + size] = left[i]
        r, c = spread - int(moves[i, 2]), spread - int(moves[i, 3])
        images[i, :, r : r + size, c : c + size] = torch.maximum(images[i, :, r : r + size, c : c + size], right[i])
    X = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    tasks = {"left": TaskSpec("left", "classification", len(classes)),
             "right": TaskSpec("right", "classification", len(classes))}
    targets = {"left": torch.as_tensor(labels[:, 0]), "right": torch.as_tensor(labels[:, 1])}
    info = {"characters": [glyphs.class_names[c] for c in classes], "classes": classes}
    return MultiTaskSet(X, targets, tasks, info=info)


def noisy_regression(num_examples: int = 1000, seed: int = 0,
                     noise: tuple[float, float] = (10.0, 1.0)) -> MultiTaskSet:
    """Two regression tasks on one input: ``y1 = 2x + 8 + 10 eps1``, ``y2 = 3x + 3 + eps2``, ``x, eps ~ N(0, 1)``.

    The noise scales (10 and 1 by default) are what uncertainty weighting
    should recover as ``sigma_1`` and ``sigma_2``.
    """
    if num_examples < 2:
        raise ValueError(f"num_examples must be >= 2, got {num_examples}")
    gen = runtime.generator(seed)
    x = torch.randn(num_examples, 1, generator=gen)
    eps = torch.randn(num_examples, 2, generator=gen)
    targets = {"y1": 2 * x[:, 0] + 8 + noise[0] * eps[:, 0], "y2": 3 * x[:, 0] + 3 + noise[1] * eps[:, 1]}
    tasks = {name: TaskSpec(name, "regression", 1) for name in targets}
    return MultiTaskSet(x, targets, tasks, info={"noise": noise})

