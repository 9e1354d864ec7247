"""The one supervised training loop that every chapter reuses.

``fit`` trains any ``nn.Module`` on ``(X, y)`` tensors, a :class:`~mtl_course.data.LabelledSet`
or a ``DataLoader``; it shows a progress bar, evaluates on validation data after
each epoch, stops early when validation stops improving, restores the best
weights, and returns a :class:`History` for plotting.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Mapping, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

from . import runtime
from .data import LabelledSet, Task
from .metrics import accuracy

Data = Union[tuple, LabelledSet, Task, DataLoader]
Metric = Callable[[torch.Tensor, torch.Tensor], float]


@dataclass
class History:
    """Per-epoch record of a run: what the learning-curve plots draw."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_metric: list[float] = field(default_factory=list)
    step_loss: list[float] = field(default_factory=list)  # every optimizer step's training loss
    best_epoch: int | None = None
    stopped_early: bool = False

    @property
    def best_val_metric(self) -> float | None:
        return None if self.best_epoch is None else self.val_metric[self.best_epoch]


def as_tensors(data: Data) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, y)`` from a tuple, a :class:`LabelledSet` or a :class:`Task`."""
    if isinstance(data, (LabelledSet, Task)):
        return data.X, data.y
    if isinstance(data, tuple) and len(data) == 2:
        return data
    raise TypeError(f"expected (X, y), a LabelledSet or a Task, got {type(data).__name__}")


def make_loader(data: Data, batch_size: int = 64, shuffle: bool = True, seed: int = 0) -> DataLoader:
    """A ``DataLoader`` over ``data`` (returned unchanged if it already is one).

    It yields the same batches, in the same order, as
    ``DataLoader(TensorDataset(X, y), batch_size, shuffle, generator=seeded)``,
    but fetches each batch with one tensor indexing instead of ``batch_size``
    single-example fetches, which dominate the time of small networks.
    """
    if isinstance(data, DataLoader):
        return data
    X, y = as_tensors(data)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}; they must match")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    generator = runtime.generator(seed)
    dataset = TensorDataset(X, y)
    order = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, sampler=BatchSampler(order, batch_size, drop_last=False), batch_size=None,
                      generator=generator)


def _size(dataset) -> int | None:
    try:
        return len(dataset)
    except TypeError:  # an iterable data set
        return None


def _to(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(v, device) for v in batch)
    return batch


@dataclass
class EpochTally:
    """The steps of the epoch under way: how many, and their summed loss over examples (for its mean loss)."""

    steps: int = 0
    loss_sum: float = 0.0
    examples: int = 0

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(self.examples, 1)


def train_steps(
    model: nn.Module,
    batches: Iterator,
    optimizer: torch.optim.Optimizer,
    tally: EpochTally,
    loss_fn: Callable = F.cross_entropy,
    device: torch.device | None = None,
    step_losses: list[float] | None = None,
    max_steps: int | None = None,
    after_step: Callable[[], None] | None = None,
) -> None:
    """One optimizer step per batch of ``batches``, counted in ``tally``; ``after_step()`` follows each.

    Each step's loss is appended to ``step_losses`` when given; the steps stop
    once that list holds ``max_steps`` losses.
    """
    device = device or next(model.parameters()).device
    model.train()
    for X, y in batches:
        if max_steps is not None and step_losses is not None and len(step_losses) >= max_steps:
            break
        X, y = _to(X, device), _to(y, device)
        loss = loss_fn(model(X), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step_losses is not None:
            step_losses.append(loss.item())
        tally.steps += 1
        tally.loss_sum += loss.item() * len(X)
        tally.examples += len(X)
        if after_step is not None:
            after_step()


def train_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable = F.cross_entropy,
    device: torch.device | None = None,
    step_losses: list[float] | None = None,
    max_steps: int | None = None,
) -> float:
    """One pass over ``loader``; returns the mean training loss.

    Each step's loss is appended to ``step_losses`` when given; the pass stops
    early once that list holds ``max_steps`` losses.
    """
    tally = EpochTally()
    train_steps(model, iter(loader), optimizer, tally, loss_fn, device, step_losses, max_steps)
    return tally.mean_loss


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Data,
    loss_fn: Callable = F.cross_entropy,
    metric: Metric | None = accuracy,
    batch_size: int = 512,
    device: torch.device | None = None,
) -> tuple[float, float | None]:
    """Mean loss and metric of ``model`` on ``data`` (metric is computed on all outputs at once)."""
    device = device or next(model.parameters()).device
    model.eval()
    outputs, targets, total, count = [], [], 0.0, 0
    for X, y in make_loader(data, batch_size=batch_size, shuffle=False):
        X, y = _to(X, device), _to(y, device)
        out = model(X)
        total += loss_fn(out, y).item() * len(X)
        count += len(X)
        outputs.append(out.cpu())
        targets.append(y.cpu())
    if count == 0:
        raise ValueError("cannot evaluate on an empty data set")
    value = metric(torch.cat(outputs), torch.cat(targets)) if metric is not None else None
    return total / count, value


@dataclass
class BestOnValidation:
    """The best validation score so far (higher is better), when it came, and the state to go back to.

    Every training loop of the course keeps the weights that did best on
    validation with one of these: :meth:`update` after each evaluation,
    :meth:`restore` once training stops. ``since`` counts the evaluations since
    the best, for early stopping. Its fields are plain data, so a checkpoint
    saves it with :func:`dataclasses.asdict`.

    >>> best = BestOnValidation()
    >>> [best.update(score, step, lambda: f"weights at {step}") for step, score in enumerate([0.5, 0.7, 0.6])]
    [True, True, False]
    >>> best.score, best.at, best.state, best.since
    (0.7, 1, 'weights at 1', 1)
    """

    score: float | None = None
    at: int | None = None
    state: Any = None
    since: int = 0

    def update(self, score: float, at: int, snapshot: Callable[[], Any] | None = None) -> bool:
        """Record ``score`` (evaluation ``at``); if it is the best yet, keep ``snapshot()`` and return True."""
        if self.score is None or score > self.score:
            self.score, self.at, self.since = score, at, 0
            if snapshot is not None:
                self.state = snapshot()
            return True
        self.since += 1
        return False

    def restore(self, load: Callable[[Any], Any]) -> None:
        """Put the kept state back with ``load(state)`` (nothing happens if none was kept)."""
        if self.state is not None:
            load(self.state)


@dataclass
class FitProgress:
    """Where a run of :func:`fit` stands, besides its model, optimizer and history (what a checkpoint saves)."""

    epoch: int = 0
    tally: EpochTally = field(default_factory=EpochTally)  # the epoch under way
    order: dict | None = None  # the generators at the start of that epoch, which decide its batch order
    best: BestOnValidation = field(default_factory=lambda: BestOnValidation())
    finished: bool = False


def _order_generators(loader: DataLoader) -> list[torch.Generator]:
    """The generators a loader draws its batch order from (its own, its samplers')."""
    found = []
    samplers = [loader.sampler, loader.batch_sampler]
    owners = [loader, *samplers, *(getattr(s, "sampler", None) for s in samplers)]
    for owner in owners:
        g = getattr(owner, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not f for f in found):
            found.append(g)
    return found


def batch_order(loader: DataLoader) -> dict:
    """The state that decides the order of ``loader``'s next pass: its generators and the global ones."""
    return {"loader": [g.get_state() for g in _order_generators(loader)], "random": runtime.random_state()}


def set_batch_order(loader: DataLoader, order: Mapping) -> None:
    """Put back what :func:`batch_order` returned: the next pass yields the batches it would have then."""
    for g, state in zip(_order_generators(loader), order["loader"]):
        g.set_state(state)
    runtime.set_random_state(order["random"])


def epoch_batches(loader: DataLoader, progress: FitProgress, resumed: Mapping | None, record: bool) -> Iterator:
    """The batches of the epoch under way that are still to do.

    A new epoch records its batch order in ``progress`` (if ``record``: the run
    has a checkpoint). A resumed one (``resumed`` holds the stopped run's random
    generators) puts that order back, skips the batches already done, then puts
    the generators back where they stopped.
    """
    if resumed is None:
        progress.order = batch_order(loader) if record else None
    else:
        set_batch_order(loader, progress.order)
    batches = iter(loader)
    for _ in range(progress.tally.steps):
        next(batches)
    if resumed is not None:
        runtime.set_random_state(resumed["random"])
    return batches


def fit(
    model: nn.Module,
    train: Data,
    val: Data | None = None,
    *,
    num_epochs: int = 10,
    lr: float = 1e-3,
    optimizer: torch.optim.Optimizer | None = None,
    loss_fn: Callable = F.cross_entropy,
    metric: Metric | None = accuracy,
    higher_is_better: bool = True,
    batch_size: int = 64,
    patience: int | None = None,
    restore_best: bool = True,
    seed: int = 0,
    device: torch.device | None = None,
    desc: str = "training",
    max_steps: int | None = None,
    checkpoint: runtime.Checkpoint | None = None,
) -> History:
    """Train ``model`` on ``train``; keep the weights that did best on ``val``.

    Without ``optimizer``, Adam with learning rate ``lr`` over the parameters
    that require gradients (so frozen layers stay frozen). With ``val``, the
    model is evaluated after each epoch; ``patience`` epochs without improvement
    stop training early, and the best weights are restored at the end (unless
    ``restore_best=False``, for when ``val`` is only watched, e.g. to see an old
    task being forgotten). Model selection uses ``val`` only, never test data.
    ``max_steps`` stops after that many optimizer steps (the store's provenance
    test re-runs a recipe's first steps this way); ``history.step_loss`` holds
    every step's loss.

    With ``checkpoint`` (a :class:`mtl_course.runtime.Checkpoint`) the run saves
    its state every few minutes (model, optimizer, history, best state, the
    epoch and step, the random generators) and a run started again with the
    same checkpoint continues where it stopped, ending with the same parameters
    and history as one that was never stopped.
    """
    if num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1, got {num_epochs}")
    device = device or next(model.parameters()).device
    trainable = [p for p in model.parameters() if p.requires_grad]
    if optimizer is None:
        if not trainable:
            raise ValueError("the model has no trainable parameters: unfreeze some before calling fit")
        optimizer = torch.optim.Adam(trainable, lr=lr)
    loader = make_loader(train, batch_size=batch_size, shuffle=True, seed=seed)
    signature = {"loop": "fit", "num_epochs": num_epochs, "batch_size": batch_size, "seed": seed,
                 "max_steps": max_steps, "patience": patience, "examples": _size(loader.dataset)}
    run = runtime.Resumable(checkpoint, signature, model, optimizer)
    history, progress = History(), FitProgress()
    resumed = run.restore()
    if resumed is not None:
        history = History(**resumed["history"])
        saved = resumed["progress"]
        progress = FitProgress(**{**saved, "tally": EpochTally(**saved["tally"]),
                                  "best": BestOnValidation(**saved["best"])})

    def state() -> dict:
        return {"history": asdict(history), "progress": asdict(progress)}

    if resumed is not None and progress.finished:
        runtime.set_random_state(resumed["random"])  # a finished run: only its end state to restore
    todo = range(num_epochs if progress.finished else progress.epoch, num_epochs)
    bar = runtime.progress(todo, desc=desc, initial=num_epochs - len(todo), total=num_epochs)
    for _ in bar:
        batches = epoch_batches(loader, progress, resumed, record=checkpoint is not None)
        resumed = None
        train_steps(model, batches, optimizer, progress.tally, loss_fn, device, history.step_loss, max_steps,
                    after_step=lambda: run.save_if_due(state))
        history.train_loss.append(progress.tally.mean_loss)
        epoch, progress.epoch, progress.tally = progress.epoch, progress.epoch + 1, EpochTally()
        if max_steps is not None and len(history.step_loss) >= max_steps:
            break
        if val is None:
            continue
        val_loss, val_metric = evaluate(model, val, loss_fn, metric, device=device)
        history.val_loss.append(val_loss)
        history.val_metric.append(val_metric if val_metric is not None else val_loss)
        score = val_metric if val_metric is not None else -val_loss
        snapshot = (lambda: copy.deepcopy(model.state_dict())) if restore_best else None
        if progress.best.update(score if metric is None or higher_is_better else -score, epoch, snapshot):
            history.best_epoch = epoch
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(train_loss=f"{history.train_loss[-1]:.3f}", val=f"{history.val_metric[-1]:.3f}")
        if patience is not None and progress.best.since >= patience:
            history.stopped_early = True
            break
    progress.finished = True
    run.finish(state)
    progress.best.restore(model.load_state_dict)
    return history


@torch.no_grad()
def predict(model: nn.Module, X: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Model outputs for ``X`` in evaluation mode, on the model's device, returned on the CPU."""
    device = next(model.parameters()).device
    model.eval()
    return torch.cat([model(X[i : i + batch_size].to(device)).cpu() for i in range(0, len(X), batch_size)])
