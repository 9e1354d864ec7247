"""Where and how code runs: device, seeds, run profile, progress bars, data directory.

Every notebook starts with::

    device = runtime.get_device()
    profile = runtime.get_profile()
    runtime.seed_everything(0)

and sizes its experiments with :func:`by_profile`, so the same notebook runs
in about two minutes on a laptop CPU (``quick``, the default everywhere) and
reproduces published settings on a GPU when asked to (``full``).
"""
from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping, TypeVar

import numpy as np
import torch

PROFILES = ("quick", "full")
T = TypeVar("T")


def in_colab() -> bool:
    """True when running inside Google Colab."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def get_device(prefer: str | None = None) -> torch.device:
    """Pick the device to compute on: ``cuda`` if present, then ``mps``, then ``cpu``.

    ``prefer`` asks for one explicitly (``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"cpu"``);
    asking for an accelerator that this machine lacks raises a ``RuntimeError``
    that says what to do instead.
    """
    if prefer is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(prefer)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device {prefer!r} was requested but CUDA is not available on this machine. "
                "On Colab choose Runtime > Change runtime type > GPU; elsewhere call "
                "get_device() without an argument to fall back to the CPU."
            )
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device {prefer!r} was requested but only {torch.cuda.device_count()} CUDA "
                "device(s) exist; use 'cuda' or 'cuda:0'."
            )
    elif device.type == "mps" and not _mps_available():
        raise RuntimeError(
            f"device {prefer!r} was requested but Apple's MPS backend is not available; "
            "call get_device() without an argument to fall back to the CPU."
        )
    elif device.type not in ("cpu", "cuda", "mps"):
        raise RuntimeError(f"unknown device {prefer!r}: use 'cuda', 'mps' or 'cpu'.")
    return device


SEED_OFFSET_VARIABLE = "MTL_COURSE_SEED"


def seed_offset() -> int:
    """The seed offset, ``MTL_COURSE_SEED`` (default 0), added to every seed the course uses.

    The robustness runs (``make test-robust``) set it to see whether a chapter's
    claims hold under other seeds, without editing the notebook.
    """
    value = os.environ.get(SEED_OFFSET_VARIABLE, "").strip()
    if not value:
        return 0
    try:
        offset = int(value)
    except ValueError:
        offset = -1
    if offset < 0:
        raise ValueError(
            f"{SEED_OFFSET_VARIABLE}={value!r} is not a seed offset; set it to a non-negative "
            "integer (0, the default, keeps every seed as the notebook wrote it) or unset it."
        )
    return offset


def shift_seed(seed: int) -> int:
    """``seed`` plus the seed offset: every seed that draws data, episodes, orders or weights goes through it.

    >>> import os; os.environ.pop("MTL_COURSE_SEED", None) and None
    >>> shift_seed(3)
    3
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed) + seed_offset()


def rng(seed: int) -> np.random.Generator:
    """``np.random.default_rng`` with the seed shifted by the seed offset."""
    return np.random.default_rng(shift_seed(seed))


def generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` shifted by the seed offset."""
    return torch.Generator().manual_seed(shift_seed(seed))


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and PyTorch (all devices) with ``seed`` plus the seed offset.

    With ``deterministic=True`` PyTorch also refuses nondeterministic kernels,
    so that two runs on the same machine give the same numbers bit for bit.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    seed = shift_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def get_profile() -> str:
    """The run profile: ``quick`` (the book's settings, CPU-sized) or ``full`` (the papers' settings).

    ``quick`` unless ``MTL_COURSE_PROFILE`` says ``full``, on every device. The
    quick profile loads the trained-model store and runs each notebook in about
    two minutes on a laptop CPU and in seconds on a GPU; the full profile trains
    for hours even on a GPU, so it is never chosen without being asked for
    (:func:`describe` says how to switch).
    """
    value = os.environ.get("MTL_COURSE_PROFILE")
    if value is None:
        return "quick"
    value = value.strip().lower()
    if value not in PROFILES:
        raise ValueError(
            f"MTL_COURSE_PROFILE={value!r} is not a profile; set it to 'quick' or 'full' "
            "(or unset it for quick)."
        )
    return value


def by_profile(quick: T, full: T, profile: str | None = None) -> T:
    """Choose a setting by profile: ``outer_steps = by_profile(quick=300, full=60_000)``."""
    profile = get_profile() if profile is None else profile
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    return quick if profile == "quick" else full


@contextmanager
def num_threads_at_most(n: int) -> Iterator[int]:
    """Run the block with at most ``n`` CPU threads (tiny networks are fastest on one); restores the count."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(int(n), before)))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def progress_disabled() -> bool:
    """True when ``TQDM_DISABLE`` is set to a true value (used by tests and the book build)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true", "yes", "on")


def progress(iterable: Iterable[T] | None = None, **kwargs) -> Iterable[T]:
    """A ``tqdm.auto`` progress bar that stays silent when ``TQDM_DISABLE=1``."""
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", progress_disabled())
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)


def data_dir(*parts: str) -> Path:
    """The course's data and cache directory (``MTL_COURSE_DATA``, default ``~/.cache/mtl_course``).

    Extra ``parts`` name a sub-directory, which is created.
    """
    root = os.environ.get("MTL_COURSE_DATA")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "mtl_course"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Write a file through a temporary file in its folder and ``os.replace``: readers never see half a file.

    ``write(file)`` writes the content to the open binary file, e.g.
    ``lambda f: torch.save(state, f)``. The file is readable by everyone (a cache
    may be shared); on any error the temporary file is removed and ``path`` is
    left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
        os.chmod(temporary, 0o644)  # mkstemp makes the file private
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def random_state() -> dict[str, Any]:
    """The state of every random generator a training loop may draw from: Python's, NumPy's and torch's."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`random_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class TrainingClock:
    """The seconds a run has trained: since it started here, plus ``before``, those of the stopped runs it continues."""

    started: float = field(default_factory=time.monotonic)
    before: float = 0.0

    def seconds(self) -> float:
        return self.before + time.monotonic() - self.started


class Checkpoint:
    """Where a long training loop saves its state, every ``every`` seconds, so that a stopped run can resume.

    The loop calls :meth:`load` before its first step (``None``: start afresh),
    :meth:`save` when :meth:`due` says so, and :meth:`finish` after its last
    step, which removes the file so that the next run starts afresh. ``save``
    adds the random generators' state (:func:`random_state`, under ``"random"``;
    the loop restores it with :func:`set_random_state` once it has caught up)
    and ``signature``, what identifies the run (e.g. its method and step count);
    ``load`` refuses a file saved by a run with another signature. The file is written atomically
    (:func:`write_atomically`) and read with ``torch.load(weights_only=False)``:
    load only checkpoints you wrote yourself.

    ``run`` identifies the whole run (the store puts its recipe, config, seed
    and profile there) and joins every signature. With ``hold=True`` a loop
    that finishes saves its final state instead of removing the file (see
    :class:`Resumable`), so that a run of several steps (training, then its
    test; or several trainings, each in its own :meth:`part`) resumes after
    the last loop it finished; whoever made the checkpoint calls :meth:`remove`
    when the whole run is done.
    """

    def __init__(self, path: str | os.PathLike, every: float = 300.0, run: Mapping[str, Any] | None = None,
                 hold: bool = False, clock: TrainingClock | None = None) -> None:
        if every < 0:
            raise ValueError(f"every must be >= 0 seconds, got {every}")
        self.path, self.every = Path(path), float(every)
        self.run, self.hold = dict(run or {}), hold
        self.clock = clock or TrainingClock()
        self._saved_at = time.monotonic()

    def seconds(self) -> float:
        """How long this run has trained, counting the stopped runs it continues (up to their last save)."""
        return self.clock.seconds()

    def due(self) -> bool:
        return time.monotonic() - self._saved_at >= self.every

    def load(self, signature: Mapping[str, Any]) -> dict | None:
        if not self.path.is_file():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        expected, found = {**self.run, **signature}, state.get("signature") or {}
        if found != expected:
            differ = sorted(k for k in expected.keys() | found.keys() if found.get(k) != expected.get(k))
            raise ValueError(f"the checkpoint {self.path} belongs to another run (it differs in "
                             f"{', '.join(differ)}): delete it to start afresh, or resume that run")
        self.clock.before = max(self.clock.before, state.get("seconds", 0.0))
        self._saved_at = time.monotonic()
        return state

    def save(self, state: Mapping[str, Any], signature: Mapping[str, Any]) -> None:
        full = {**state, "signature": {**self.run, **signature}, "random": random_state(),
                "seconds": self.seconds()}
        write_atomically(self.path, lambda file: torch.save(full, file))
        self._saved_at = time.monotonic()

    def finish(self) -> None:
        self.path.unlink(missing_ok=True)

    def part(self, name: str) -> Checkpoint:
        """The checkpoint of one part of this run (e.g. one of its several trainings), in a folder beside it."""
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        return Checkpoint(self.path.with_suffix("") / f"{safe}{self.path.suffix}", self.every,
                          {**self.run, "part": name}, self.hold, self.clock)

    def remove(self) -> None:
        """Delete this checkpoint and those of its parts: the whole run is done."""
        import shutil

        self.finish()
        shutil.rmtree(self.path.with_suffix(""), ignore_errors=True)


class Resumable:
    """A training loop's side of a :class:`Checkpoint`, or of none (then every call does nothing).

    :meth:`restore` puts back the model and optimizer of a stopped run and
    returns the rest of what it saved (the loop's own ``state``, and the random
    generators under ``"random"``, which the loop restores with
    :func:`set_random_state` once it has caught up); :meth:`save_if_due` saves
    every few minutes and :meth:`finish` after the last step. ``state()``
    returns what the loop needs besides the model and optimizer (step, history,
    best state, ...); it is called only when something is saved.
    """

    def __init__(self, checkpoint: Checkpoint | None, signature: Mapping[str, Any],
                 model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.checkpoint, self.signature = checkpoint, dict(signature)
        self.model, self.optimizer = model, optimizer

    def restore(self) -> dict | None:
        saved = self.checkpoint.load(self.signature) if self.checkpoint is not None else None
        if saved is not None:
            self.model.load_state_dict(saved.pop("model"))
            self.optimizer.load_state_dict(saved.pop("optimizer"))
        return saved

    def save(self, state: Callable[[], Mapping[str, Any]]) -> None:
        everything = {**state(), "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
        self.checkpoint.save(everything, self.signature)

    def save_if_due(self, state: Callable[[], Mapping[str, Any]]) -> None:
        if self.checkpoint is not None and self.checkpoint.due():
            self.save(state)

    def finish(self, state: Callable[[], Mapping[str, Any]]) -> None:
        """The loop is done: remove the checkpoint, or save the final state if the checkpoint holds it."""
        if self.checkpoint is None:
            return
        if self.checkpoint.hold:
            self.save(state)
        else:
            self.checkpoint.finish()


# Environment variables that change the CPU's floating-point results (the robustness
# runs set them to emulate other processors).
ROUNDING_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")


def compute_tag(device: torch.device | str) -> str:
    """What changes a trained model's last bits besides its settings, for cache file names.

    The device type; on the CPU also the thread count and any of
    :data:`ROUNDING_VARIABLES` that is set; and the seed offset when it is not 0.
    """
    device = torch.device(device)
    tag = f"cpu{torch.get_num_threads()}t" if device.type == "cpu" else device.type
    if device.type == "cpu":
        for name in ROUNDING_VARIABLES:
            value = os.environ.get(name, "").strip()
            if value:
                tag += "-" + "".join(ch for ch in f"{name.split('_')[0]}{value}".lower() if ch.isalnum())
    return tag + (f"-seed+{seed_offset()}" if seed_offset() else "")


def describe() -> str:
    """Where this notebook runs, and how to switch the profile (the setup cell prints it)."""
    device, profile = get_device(), get_profile()
    line = f"device={device.type} profile={profile} torch={torch.__version__.split('+')[0]}"
    line += f" seed_offset={seed_offset()}" if seed_offset() else ""
    if profile == "quick":  # short lines: they fit the book's page
        how = "quick profile: minutes on a CPU. The papers' settings take hours on a GPU:\n%env MTL_COURSE_PROFILE=full"
    else:
        how = "full profile, the papers' settings: hours even on a GPU. Back to minutes:\n%env MTL_COURSE_PROFILE=quick"
    return f"{line}\n{how}"