"""Tasks, episodes and the N-way K-shot sampler.

A *task* is what a learner is asked to do; in few-shot learning a task comes
as an *episode*: a small labelled **support** set to adapt on and a **query**
set, from the same classes, to be judged on. The sampler below draws N-way
K-shot episodes from any :class:`LabelledSet` restricted to a split of its
classes, and remaps the N chosen classes to the labels ``0 .. N-1``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from .. import runtime


@dataclass
class LabelledSet:
    """Inputs ``X`` with integer class labels ``y`` (``0 .. num_classes-1``).

    ``class_names[c]`` names class ``c``; ``class_groups[c]`` (optional) names
    the group a class belongs to, e.g. the alphabet of an Omniglot character,
    so that classes can be split by group.
    """

    X: torch.Tensor
    y: torch.Tensor
    class_names: list[str]
    class_groups: list[str] | None = None

    def __post_init__(self) -> None:
        if len(self.X) != len(self.y):
            raise ValueError(f"X has {len(self.X)} rows but y has {len(self.y)} labels; they must match.")
        self.y = torch.as_tensor(self.y, dtype=torch.long)
        if len(self.y) and (int(self.y.min()) < 0 or int(self.y.max()) >= len(self.class_names)):
            raise ValueError(
                f"labels must lie in 0..{len(self.class_names) - 1} (one per class name), "
                f"found {int(self.y.min())}..{int(self.y.max())}"
            )
        if self.class_groups is not None and len(self.class_groups) != len(self.class_names):
            raise ValueError("class_groups must give one group per class name")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def groups(self) -> list[str]:
        """The distinct groups, in order of first appearance."""
        if self.class_groups is None:
            return []
        return list(dict.fromkeys(self.class_groups))

    def __len__(self) -> int:
        return len(self.y)

    def indices_by_class(self) -> list[np.ndarray]:
        """For each class, the row indices of its examples."""
        y = self.y.numpy()
        order = np.argsort(y, kind="stable")
        bounds = np.searchsorted(y[order], np.arange(self.num_classes + 1))
        return [order[bounds[c] : bounds[c + 1]] for c in range(self.num_classes)]

    def subset(self, classes: Sequence[int]) -> "LabelledSet":
        """The examples of ``classes`` only, relabelled ``0 .. len(classes)-1``."""
        classes = [int(c) for c in classes]
        keep = torch.isin(self.y, torch.tensor(classes))
        remap = torch.full((self.num_classes,), -1, dtype=torch.long)
        remap[torch.tensor(classes)] = torch.arange(len(classes))
        groups = None if self.class_groups is None else [self.class_groups[c] for c in classes]
        return LabelledSet(self.X[keep], remap[self.y[keep]], [self.class_names[c] for c in classes], groups)


@dataclass
class ClassSplit:
    """Disjoint lists of class ids for meta-training, validation and meta-test."""

    train: list[int]
    val: list[int]
    test: list[int]

    def __post_init__(self) -> None:
        a, b, c = set(self.train), set(self.val), set(self.test)
        if a & b or a & c or b & c:
            raise ValueError("a class split must be disjoint: a class appears in two of train/val/test")


def split_classes(
    data: LabelledSet,
    by: str = "class",
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> ClassSplit:
    """Split the classes of ``data`` into train/val/test.

    ``by="class"`` shuffles individual classes; ``by="group"`` keeps each group
    (e.g. an alphabet) whole, so test classes come from groups never seen in
    training, as in Omniglot's background/evaluation split.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    if by == "class":
        units = [[c] for c in range(data.num_classes)]
    elif by == "group":
        if data.class_groups is None:
            raise ValueError("by='group' needs a data set with class_groups; use by='class' instead")
        groups = data.groups
        units = [[c for c, g in enumerate(data.class_groups) if g == name] for name in groups]
    else:
        raise ValueError(f"by must be 'class' or 'group', got {by!r}")
    if len(units) < 3:
        raise ValueError(f"need at least 3 {by}s to make a train/val/test split, found {len(units)}")
    order = rng.permutation(len(units))
    n_train = max(1, int(round(fractions[0] * len(units))))
    n_val = max(1, int(round(fractions[1] * len(units))))
    n_train = min(n_train, len(units) - 2)
    n_val = min(n_val, len(units) - n_train - 1)
    pick = lambda idx: sorted(c for i in idx for c in units[i])  # noqa: E731
    return ClassSplit(
        train=pick(order[:n_train]),
        val=pick(order[n_train : n_train + n_val]),
        test=pick(order[n_train + n_val :]),
    )


@dataclass
class Task:
    """A supervised task: inputs and targets to learn from, plus a description."""

    X: torch.Tensor
    y: torch.Tensor
    info: dict = field(default_factory=dict)


@dataclass
class Episode:
    """A few-shot task: adapt on the support set, evaluate on the query set.

    Labels are remapped to ``0 .. n_way-1``; ``classes[i]`` is the original class
    id of label ``i``.
    """

    support_X: torch.Tensor
    support_y: torch.Tensor
    query_X: torch.Tensor
    query_y: torch.Tensor
    classes: list[int] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def n_way(self) -> int:
        return len(self.classes)

    def to(self, device: torch.device | str) -> "Episode":
        return Episode(
            self.support_X.to(device),
            self.support_y.to(device),
            self.query_X.to(device),
            self.query_y.to(device),
            list(self.classes),
            dict(self.info),
        )


def stack_episodes(episodes: Sequence[Episode]) -> Episode:
    """Stack episodes of the same shape into one with a leading task dimension (for ``vmap``)."""
    if not episodes:
        raise ValueError("stack_episodes needs at least one episode")
    return Episode(
        torch.stack([e.support_X for e in episodes]),
        torch.stack([e.support_y for e in episodes]),
        torch.stack([e.query_X for e in episodes]),
        torch.stack([e.query_y for e in episodes]),
        [list(e.classes) for e in episodes],  # type: ignore[list-item]
    )


class EpisodeSampler:
    """Draw N-way K-shot episodes from the ``classes`` of a labelled set.

    >>> sampler = EpisodeSampler(glyphs, split.test, n_way=5, k_shot=1, q_queries=15, seed=0)
    >>> episode = sampler.sample()

    Each episode picks ``n_way`` distinct classes, then ``k_shot`` support and
    ``q_queries`` query examples per class, without overlap. The sampler owns its
    random generator, so the same seed gives the same sequence of episodes.
    """

    def __init__(
        self,
        data: LabelledSet,
        classes: Sequence[int] | None = None,
        n_way: int = 5,
        k_shot: int = 1,
        q_queries: int = 15,
        seed: int = 0,
    ) -> None:
        self.data = data
        self.classes = list(range(data.num_classes)) if classes is None else [int(c) for c in classes]
        for name, value, low in (("n_way", n_way, 2), ("k_shot", k_shot, 1), ("q_queries", q_queries, 0)):
            if not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        bad = [c for c in self.classes if not 0 <= c < data.num_classes]
        if bad:
            raise ValueError(f"class ids {bad[:5]} are outside 0..{data.num_classes - 1}")
        if n_way > len(self.classes):
            raise ValueError(
                f"cannot draw {n_way}-way episodes from a split with only {len(self.classes)} classes; "
                f"lower n_way to at most {len(self.classes)} or use a split with more classes."
            )
        by_class = data.indices_by_class()
        self._pools = {c: by_class[c] for c in self.classes}
        smallest = min(len(self._pools[c]) for c in self.classes)
        if k_shot + q_queries > smallest:
            raise ValueError(
                f"{k_shot}-shot with {q_queries} queries needs {k_shot + q_queries} examples per class, "
                f"but a class in this split has only {smallest}; lower k_shot or q_queries."
            )
        self.n_way, self.k_shot, self.q_queries = int(n_way), int(k_shot), int(q_queries)
        self.rng = runtime.rng(seed)

    def sample(self) -> Episode:
        """One episode; support and query are ordered by remapped label."""
        chosen = self.rng.choice(self.classes, size=self.n_way, replace=False)
        support, query = [], []
        for c in chosen:
            rows = self.rng.choice(self._pools[int(c)], size=self.k_shot + self.q_queries, replace=False)
            support.append(rows[: self.k_shot])
            query.append(rows[self.k_shot :])
        s, q = np.concatenate(support), np.concatenate(query)
        labels = torch.arange(self.n_way)
        return Episode(
            support_X=self.data.X[torch.from_numpy(s)],
            support_y=labels.repeat_interleave(self.k_shot),
            query_X=self.data.X[torch.from_numpy(q)],
            query_y=labels.repeat_interleave(self.q_queries),
            classes=[int(c) for c in chosen],
        )

    def batch(self, num_tasks: int) -> list[Episode]:
        """A meta-batch of ``num_tasks`` episodes."""
        return [self.sample() for _ in range(num_tasks)]

    def __iter__(self):
        while True:
            yield self.sample()


def split_examples(
    data: LabelledSet,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> tuple[LabelledSet, LabelledSet, LabelledSet]:
    """Split the *examples* of ``data`` into train/val/test, stratified by class.

    Every class keeps its share in each part; all classes appear in all parts
    (the ordinary supervised split, unlike :func:`split_classes`).
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for rows in data.indices_by_class():
        rows = rng.permutation(rows)
        n_train = int(round(fractions[0] * len(rows)))
        n_val = int(round(fractions[1] * len(rows)))
        for part, chunk in zip(parts, np.split(rows, [n_train, n_train + n_val])):
            part.append(chunk)
    out = []
    for chunks in parts:
        rows = torch.from_numpy(rng.permutation(np.concatenate(chunks)))
        out.append(LabelledSet(data.X[rows], data.y[rows], list(data.class_names), data.class_groups))
    return tuple(out)  # type: ignore[return-value]
