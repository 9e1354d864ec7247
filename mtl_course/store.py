"""The trained-model store: models trained once, properly, and loaded by every chapter.

Some experiments need more training than a chapter can afford in its two
minutes on a laptop CPU. Each such model has a **recipe** in the package (the
function that trains it, its configuration and its seed), and ``make models``
(``python -m mtl_course.train all``, see :mod:`mtl_course.train`) runs every recipe and writes

- the weights, ``mtl_course/trained/<name>.pt``, and
- one ``mtl_course/trained/manifest.json`` with an entry per model: ``name``,
  ``chapter``, ``recipe``, ``profile``, ``config``, ``seed``, ``code_version``, ``machine``,
  ``seconds``, ``metrics`` and a ``curve`` (the first step losses exactly, the
  rest subsampled), plus the file's size and SHA-256.

Both are installed with the package, so Colab and ``pip install git+...`` have
them. Chapters call :func:`load`: a missing, corrupt or stale file raises
:class:`StoreError` with what to run or restore; nothing is trained silently in
its place. Evaluating a stored model gives the same numbers on every machine to
many more digits than training one does, which is why the chapters' printed
results can be compared by strict nbval.

A recipe's ``train`` function is called as ``train(config, seed, max_steps=None,
device=None, checkpoint=None)`` and returns a :class:`Trained`; with ``max_steps`` it stops early,
which the provenance test uses to re-run the first steps and compare their
losses with the manifest's. With ``checkpoint`` (a :class:`mtl_course.runtime.Checkpoint`)
it passes the checkpoint to its training loop, so that a stopped run resumes.

A recipe's ``config`` is its ``quick`` profile (what the chapters load); an
optional ``full_config`` is its ``full`` profile (the papers' settings, for a GPU).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import pickle
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from . import runtime

STORE_DIR = Path(__file__).resolve().parent / "trained"
MANIFEST_NAME = "manifest.json"
EARLY_STEPS = 20  # step losses kept exactly, for the provenance test
CURVE_POINTS = 100  # the rest of the curve, subsampled to about this many points
RECIPE_MODULES = ("mtl_course.transfer", "mtl_course.multitask.stored", "mtl_course.few_shot", "mtl_course.meta_transfer",
                  "mtl_course.m3tl.stored", "mtl_course.m3tl.reductions",
                  "mtl_course.m3tl.protonet")  # where the recipes are registered


class StoreError(RuntimeError):
    """A stored model is missing, corrupt or stale; the message says what to do."""


@dataclass
class Trained:
    """What a recipe's training returns: the model, its named metrics, its per-step losses, and extras."""

    model: nn.Module
    metrics: dict[str, float]
    step_losses: list[float]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    """How to train one stored model: ``train(config, seed, ...)`` and ``build(config)`` for loading.

    Bump ``version`` whenever a change to the code would change the trained
    weights: the stored file then counts as stale until ``make models`` runs.
    """

    name: str
    chapter: int
    train: Callable[..., Trained]
    build: Callable[[Mapping[str, Any]], nn.Module]
    config: Mapping[str, Any]
    seed: int = 0
    version: int = 1
    description: str = ""
    evaluate: Callable[[nn.Module, Mapping[str, Any]], tuple[dict[str, float], dict[str, Any]]] | None = None
    """Optional: ``evaluate(model, config) -> (metrics, extra)``, the test the recipe runs after training,
    so that :func:`evaluate` can score a stored model again when the test protocol changes."""
    full_config: Mapping[str, Any] | None = None
    """Optional: the config of the ``full`` profile (``config`` is the ``quick`` one)."""

    def config_for(self, profile: str) -> Mapping[str, Any]:
        """The config of ``profile``; a recipe without a ``full`` profile raises :class:`StoreError`."""
        if profile not in runtime.PROFILES:
            raise StoreError(f"no profile {profile!r}: use one of {', '.join(runtime.PROFILES)}")
        if profile == "quick":
            return self.config
        if self.full_config is None:
            full = [name for name, r in recipes().items() if r.full_config is not None]
            raise StoreError(f"the recipe {self.name!r} has no full profile; the recipes with one are "
                             f"{', '.join(full) or 'none'} (train {self.name!r} with --profile quick)")
        return self.full_config

    @property
    def resumable(self) -> bool:
        """True when ``train`` takes a ``checkpoint`` (a stopped run can resume)."""
        return "checkpoint" in inspect.signature(self.train).parameters

    @property
    def splittable(self) -> bool:
        """True when ``train`` takes ``reverse``: its runs can be shared by two processes (:func:`cached_runs`)."""
        return "reverse" in inspect.signature(self.train).parameters

    @property
    def recipe(self) -> str:
        return f"{self.train.__module__}.{self.train.__qualname__}"

    @property
    def code_version(self) -> str:
        return f"{self.name}/v{self.version}"


RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    """Add ``recipe`` to :data:`RECIPES` (the modules in :data:`RECIPE_MODULES` do so on import)."""
    if recipe.name in RECIPES and RECIPES[recipe.name] != recipe:
        raise ValueError(f"a different recipe is already registered as {recipe.name!r}")
    RECIPES[recipe.name] = recipe
    return recipe


def recipes() -> dict[str, Recipe]:
    """Every registered recipe, by name (importing the modules that define them)."""
    import importlib

    for module in RECIPE_MODULES:
        importlib.import_module(module)
    return dict(sorted(RECIPES.items()))


def recipe(name: str) -> Recipe:
    known = recipes()
    if name not in known:
        raise StoreError(f"no recipe named {name!r}; the store has {', '.join(known) or 'none'}")
    return known[name]


def _plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples become lists), so configs compare equal after a round trip."""
    return json.loads(json.dumps(value))


# ---------------------------------------------------------------------------
# The manifest
# ---------------------------------------------------------------------------


def read_manifest(folder: Path = STORE_DIR) -> dict[str, dict]:
    """The manifest's entries by name; raises :class:`StoreError` if it is missing or unreadable."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise StoreError(f"the trained-model store has no manifest ({path}); run `make models` to train the "
                         "stored models, or restore the file with `git checkout -- mtl_course/trained`")
    try:
        entries = json.loads(path.read_text())["models"]
        return {entry["name"]: entry for entry in entries}
    except (ValueError, KeyError, TypeError) as error:
        raise StoreError(f"{path} is not a valid manifest ({error}); restore it with "
                         "`git checkout -- mtl_course/trained/manifest.json` or run `make models`") from None


def write_manifest(entries: Mapping[str, dict], folder: Path = STORE_DIR) -> Path:
    path = folder / MANIFEST_NAME
    text = json.dumps({"models": [entries[name] for name in sorted(entries)]}, indent=1) + "\n"
    runtime.write_atomically(path, lambda file: file.write(text.encode()))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def machine() -> dict[str, Any]:
    """Where a model was trained: processor, threads, torch and Python versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__.split("+")[0],
            "python": platform.python_version(), "system": platform.system(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def summarise_curve(losses: list[float]) -> dict[str, Any]:
    """The first :data:`EARLY_STEPS` losses exactly, then about :data:`CURVE_POINTS` evenly spaced ones."""
    every = max(1, len(losses) // CURVE_POINTS)
    steps = list(range(0, len(losses), every))
    return {"steps": len(losses), "early_losses": losses[:EARLY_STEPS],
            "every": every, "step": steps, "loss": [losses[i] for i in steps],
            "final_loss": losses[-1] if losses else None}


# ---------------------------------------------------------------------------
# Training (make models) and loading (chapters)
# ---------------------------------------------------------------------------


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_checkpoint(name: str, profile: str, directory: Path, every: float = 300.0) -> runtime.Checkpoint:
    """The checkpoint of training recipe ``name`` in ``profile``: ``directory/<name>-<profile>.pt``.

    It belongs to this recipe, version, config, seed and profile (a checkpoint of
    any other run is refused) and holds the finished loops of the run until
    :func:`train` has written the model (see :class:`mtl_course.runtime.Checkpoint`).
    """
    r = recipe(name)
    run = {"recipe": name, "code_version": r.code_version, "profile": profile,
           "config": _plain(dict(r.config_for(profile))), "seed": r.seed}
    return runtime.Checkpoint(Path(directory) / f"{name}-{profile}.pt", every, run=run, hold=True)


def _help_train(name: str, profile: str, path: str, every: float, run: dict, device: str) -> None:
    """The second process of ``train(..., jobs=2)``: the recipe's runs from the other end (:func:`cached_runs`)."""
    r = recipe(name)
    checkpoint = runtime.Checkpoint(path, every, run=run, hold=True)
    r.train(dict(r.config_for(profile)), r.seed, device=torch.device(device), checkpoint=checkpoint, reverse=True)


def train(name: str, folder: Path = STORE_DIR, device: torch.device | None = None, profile: str = "quick",
          checkpoint: runtime.Checkpoint | None = None, jobs: int = 1) -> dict:
    """Run the recipe ``name`` in ``profile`` and write its weights and manifest entry into ``folder``.

    Returns the entry. With ``checkpoint`` (:func:`run_checkpoint`) a resumable
    recipe saves its progress there, continues a stopped run, and the
    checkpoint is removed once the model is written. With ``jobs=2`` a recipe
    made of several runs (:attr:`Recipe.splittable`) gets a second process,
    which trains the runs from the other end into the same checkpoint
    (:func:`cached_runs`) and is stopped once this process has them all.
    """
    r = recipe(name)
    config = dict(r.config_for(profile))
    if runtime.seed_offset():
        raise StoreError(f"{runtime.SEED_OFFSET_VARIABLE} is set: stored models are trained with their "
                         "recipe's own seed; unset it and run `make models` again")
    device = device or runtime.get_device()
    resume = {"checkpoint": checkpoint} if checkpoint is not None and r.resumable else {}
    if jobs < 1:
        raise StoreError(f"jobs must be at least 1, got {jobs}")
    helper = None
    if jobs > 1 and resume and r.splittable:
        import multiprocessing

        args = (name, profile, str(checkpoint.path), checkpoint.every, checkpoint.run, device.type)
        helper = multiprocessing.get_context("spawn").Process(target=_help_train, args=args, daemon=True)
        helper.start()
    started = time.perf_counter()
    try:
        result = r.train(dict(config), r.seed, device=device, **resume)
    finally:
        if helper is not None:
            helper.terminate()
            helper.join()
    seconds = checkpoint.seconds() if resume else time.perf_counter() - started
    # a recipe of several runs counts the time of every run, whichever process or session trained it
    seconds = result.extra.get("run_seconds", seconds)
    state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
    weights = folder / f"{name}.pt"
    buffer = _serialise(state)
    runtime.write_atomically(weights, lambda file: file.write(buffer))
    entry = {
        "name": name, "chapter": r.chapter, "description": r.description, "recipe": r.recipe,
        "profile": profile, "config": _plain(config), "seed": r.seed, "code_version": r.code_version,
        "trained_at_commit": _git_commit(), "machine": machine(), "device": device.type,
        "seconds": round(seconds, 1), "metrics": {k: float(v) for k, v in result.metrics.items()},
        "curve": summarise_curve([float(x) for x in result.step_losses]), "extra": _plain(result.extra),
        "file": weights.name, "bytes": weights.stat().st_size, "sha256": sha256(weights),
    }
    try:
        entries = read_manifest(folder)
    except StoreError:
        entries = {}
    entries[name] = entry
    write_manifest(entries, folder)
    if checkpoint is not None:
        checkpoint.remove()
    return entry


def evaluate(name: str, folder: Path = STORE_DIR, device: torch.device | None = None) -> dict:
    """Score the stored model ``name`` again with its recipe's ``evaluate`` and update its manifest entry.

    For a change of the test protocol (test classes, episodes, settings) that
    leaves training alone: the weights, the training curve and the training time
    stay as they are; the metrics and extras that the evaluation returns replace
    the old ones, and the entry records the commit and the seconds of the new
    evaluation. A change that alters training needs ``make models`` instead.
    """
    r = recipe(name)
    if r.evaluate is None:
        raise StoreError(f"the recipe {name!r} tests its model only while training; "
                         f"run `make models MODEL={name}` to train and test it again")
    stored = load(name, device, folder)
    started = time.perf_counter()
    metrics, extra = r.evaluate(stored.model, dict(r.config_for(profile_of(stored.entry))))
    e = dict(stored.entry)
    e["metrics"] = {**e["metrics"], **{k: float(v) for k, v in metrics.items()}}
    e["extra"] = {**e.get("extra", {}), **_plain(extra)}
    e["evaluated_at_commit"] = _git_commit()
    e["evaluation_seconds"] = round(time.perf_counter() - started, 1)
    entries = read_manifest(folder)
    entries[name] = e
    write_manifest(entries, folder)
    return e


def _serialise(state: dict) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@dataclass
class StoredModel:
    """A model loaded from the store, with its manifest entry (metrics, curve, training time)."""

    model: nn.Module
    entry: dict

    @property
    def metrics(self) -> dict[str, float]:
        return self.entry["metrics"]

    @property
    def seconds(self) -> float:
        return self.entry["seconds"]

    def describe(self) -> str:
        """One line for a chapter: what was loaded and how long its training took."""
        m = self.entry["machine"]
        how = "trained by `make models`" if "file" in self.entry else "trained in this run"
        threads = f"{m['threads']} CPU thread" + ("s" if m["threads"] != 1 else "")
        return f"{self.entry['name']}: {how}: {self.seconds:.0f} s, {threads}, {self.entry['curve']['steps']} steps"


def profile_of(entry: Mapping) -> str:
    """The profile a manifest entry was trained in (entries written before profiles existed: ``quick``)."""
    return entry.get("profile", "quick")


def entry(name: str, folder: Path = STORE_DIR) -> dict:
    """The manifest entry of ``name``, checked against its recipe: raises :class:`StoreError` if stale."""
    r = recipe(name)
    entries = read_manifest(folder)
    if name not in entries:
        raise StoreError(f"the store's manifest has no model {name!r}; run `make models MODEL={name}` to train it")
    e = entries[name]
    profile = profile_of(e)
    retrain = (f"run `make models MODEL={name}` to train it" if profile == "quick" else
               f"run `python -m mtl_course.train {name} --profile {profile}` to train it")
    stale = []
    if e.get("code_version") != r.code_version:
        stale.append(f"it was trained by {e.get('code_version')!r}, the recipe is now {r.code_version!r}")
    if profile == "full" and r.full_config is None:
        stale.append("it was trained in the full profile, which the recipe no longer has")
    elif e.get("config") != _plain(dict(r.config_for(profile))):
        stale.append(f"the recipe's {profile} config changed since")
    if e.get("seed") != r.seed:
        stale.append(f"it was trained with seed {e.get('seed')}, the recipe says {r.seed}")
    if stale:
        raise StoreError(f"the stored model {name!r} is stale: {'; '.join(stale)}; {retrain}")
    return e


def load(name: str, device: torch.device | str | None = None, folder: Path = STORE_DIR) -> StoredModel:
    """The stored model ``name`` on ``device``, after checking that its file is present, intact and current."""
    e = entry(name, folder)
    path = folder / e["file"]
    restore = (f"restore it with `git checkout -- mtl_course/trained/{e['file']}` or run "
               f"`make models MODEL={name}`")
    if not path.is_file():
        raise StoreError(f"the weights of {name!r} are missing ({path}); {restore}")
    if sha256(path) != e["sha256"]:
        raise StoreError(f"the weights of {name!r} are corrupt ({path} does not match the manifest's "
                         f"SHA-256); {restore}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = recipe(name).build(e["config"])
    model.load_state_dict(state)
    device = torch.device(device) if device is not None else runtime.get_device()
    return StoredModel(model.to(device).eval(), e)


def load_or_train(name: str, device: torch.device | str | None = None, retrain: bool = False,
                  **overrides: Any) -> StoredModel:
    """The stored model ``name``, or with ``retrain=True`` (the ``full`` profile) one trained afresh.

    Retraining runs the recipe with its config updated by ``overrides`` (e.g.
    ``outer_steps=20_000``); the result carries a manifest-like entry (metrics,
    curve, seconds, machine) but is not written into the store.
    """
    if not retrain:
        return load(name, device)
    r = recipe(name)
    device = torch.device(device) if device is not None else runtime.get_device()
    started = time.perf_counter()
    result = r.train({**dict(r.config), **overrides}, r.seed, device=device)
    e = {"name": name, "chapter": r.chapter, "config": _plain({**dict(r.config), **overrides}), "seed": r.seed,
         "machine": machine(), "seconds": round(time.perf_counter() - started, 1),
         "metrics": {k: float(v) for k, v in result.metrics.items()},
         "curve": summarise_curve([float(x) for x in result.step_losses]), "extra": _plain(result.extra)}
    return StoredModel(result.model.to(device).eval(), e)


# --------------------------------------------------------------------------------------
# Models trained outside the store: other settings than a recipe's, cached on this machine
# --------------------------------------------------------------------------------------

def fingerprint(*arrays: torch.Tensor) -> str:
    """Ten hex digits that change with the contents of ``arrays`` (the data a model is trained on).

    >>> fingerprint(torch.zeros(3)) == fingerprint(torch.zeros(3)) != fingerprint(torch.ones(3))
    True
    """
    digest = hashlib.sha1()
    for array in arrays:
        digest.update(torch.as_tensor(array).detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:10]


def cache_path(stem: str, *arrays: torch.Tensor, device: torch.device | str | None = None) -> Path:
    """Where a model with settings ``stem``, trained on ``arrays`` on ``device``, is cached.

    Under ``runtime.data_dir("models")``, named after the settings, the data
    (:func:`fingerprint`) and what changes the last bits of trained weights
    (:func:`mtl_course.runtime.compute_tag`: device, threads, emulated machine).
    """
    device = torch.device(device) if device is not None else runtime.get_device()
    return runtime.data_dir("models") / f"{stem}-data{fingerprint(*arrays)}-{runtime.compute_tag(device)}.pt"


def cached(path: Path, train: Callable[[], dict], valid: Callable[[dict], bool] = lambda checkpoint: True,
           ) -> tuple[dict, bool]:
    """A trained model's checkpoint read from ``path``, or made by ``train()`` and written there.

    A checkpoint is a dict of tensors and plain values (weights, what they were
    trained on, their validation score). A file that is missing, unreadable or
    not ``valid`` is trained again and replaced (atomically). Returns the
    checkpoint and whether it came from the file. The store's own models are
    never cached here: chapters :func:`load` them.
    """
    if path.is_file():
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(checkpoint, dict) and valid(checkpoint):
                return checkpoint, True
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
            pass  # unreadable: train again
    checkpoint = train()
    runtime.write_atomically(path, lambda file: torch.save(checkpoint, file))
    return checkpoint, False


def slug(text: str) -> str:
    """``"SS + HT 3"`` -> ``"ss_ht_3"``: a run's name as modules, files and metric keys accept it.

    >>> slug("meta (image) 3")
    'meta_image_3'
    """
    return "_".join("".join(ch if ch.isalnum() else " " for ch in text.lower()).split())


CLAIM_POLL_SECONDS = 2.0  # how often a process looks whether the runs another one trains are done


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, alive
    return True


def claim_run(path: Path) -> bool:
    """Claim the run whose part file is ``path`` for this process; False while another live process holds it.

    The claim is a file beside ``path`` that names the process (``<path>.claim``),
    made atomically. A claim whose process has ended is taken over, so a
    killed training never blocks the next one.
    """
    import os

    claim = path.with_name(path.name + ".claim")
    claim.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            holder = int(claim.read_text() or 0)
        except (OSError, ValueError):
            return False  # half written or just released: look again next time
        if holder == os.getpid() or not _alive(holder):
            claim.write_text(str(os.getpid()))
            return True
        return False
    with os.fdopen(handle, "w") as file:
        file.write(str(os.getpid()))
    return True


def release_run(path: Path) -> None:
    """Remove this process's claim on the run whose part file is ``path`` (:func:`claim_run`)."""
    path.with_name(path.name + ".claim").unlink(missing_ok=True)


def cached_runs(keys: list[str], train_one: Callable[[str], dict], checkpoint: runtime.Checkpoint | None = None,
                reverse: bool = False) -> dict[str, dict]:
    """``train_one(key)`` for every key of a recipe made of several runs, each run kept once it is done.

    With ``checkpoint``, a finished run is written to its own part file
    (:meth:`mtl_course.runtime.Checkpoint.part`) and read back instead of
    trained again, so a stopped training resumes after its last finished run.
    ``reverse=True`` takes the keys from the other end: a second process with
    the same ``checkpoint`` then trains the runs the first has not reached,
    which halves the wall time on two cores (``python -m mtl_course.train
    --jobs 2`` starts it). A process claims each run before it trains it
    (:func:`claim_run`), so no run is trained twice; when every run left is
    claimed by another process, it waits for those runs to finish. Returns
    the runs by key, in the order of ``keys``.
    """
    if checkpoint is None:
        return {key: train_one(key) for key in keys}
    done: dict[str, dict] = {}
    pending = list(reversed(keys) if reverse else keys)
    while pending:
        for key in pending:
            path = checkpoint.part(key).path
            if path.is_file():  # finished, by this process before a stop or by the other one
                done[key] = cached(path, lambda: train_one(key))[0]
            elif claim_run(path):
                try:
                    done[key] = cached(path, lambda: train_one(key))[0]
                finally:
                    release_run(path)
            else:
                continue
            pending.remove(key)
            break
        else:  # the other process trains every run left
            time.sleep(CLAIM_POLL_SECONDS)
    return {key: done[key] for key in keys}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mtl_course.store", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    moved = sub.add_parser("train", help="moved: `python -m mtl_course.train NAME ... [--profile quick|full]`")
    moved.add_argument("names", nargs="*")
    v = sub.add_parser("evaluate", help="test stored models again (weights unchanged) and update their metrics")
    v.add_argument("names", nargs="+")
    v.add_argument("--out", type=Path, default=STORE_DIR)
    sub.add_parser("list", help="the recipes and what the manifest says of them")
    args = parser.parse_args(argv)
    if args.command == "evaluate":
        for name in args.names:
            recipe(name)  # unknown names fail before any evaluation starts
        for name in args.names:
            e = evaluate(name, args.out)
            print(f"{name}: evaluated in {e['evaluation_seconds']:.0f} s, metrics {e['metrics']}", flush=True)
        return 0
    if args.command == "list":
        for name in recipes():
            try:
                e = entry(name)
                print(f"{name}: chapter {e['chapter']}, {e['seconds']:.0f} s, {e['bytes'] / 1e6:.2f} MB, "
                      f"metrics {e['metrics']}")
            except StoreError as error:
                print(f"{name}: {error}")
        return 0
    parser.error("training has one command, with profiles and resumable runs: "
                 "python -m mtl_course.train NAME ... [--profile quick|full] (or `make models`)")


if __name__ == "__main__":
    import sys

    from mtl_course import store  # the module the recipes register with, not this __main__ copy

    sys.exit(store.main())
