"""One command trains any recipe of the trained-model store, in any profile, resumably.

``python -m mtl_course.train RECIPE [RECIPE ...] [--profile quick|full] [--out DIR] [--jobs 2]``

``RECIPE`` is a name that ``python -m mtl_course.store list`` shows, or ``all``
(with ``--profile full``: every recipe that has a full profile). Each recipe
runs through :func:`mtl_course.store.train`, so it writes the same weights and
manifest entry as ``make models`` (which runs this command). While it trains,
a checkpoint is saved every ``--every`` seconds under ``--checkpoint-dir``
(default ``<data dir>/checkpoints``, see :func:`mtl_course.runtime.data_dir`):
the same command, run again after an interruption, continues where it
stopped, and a recipe that finishes removes its checkpoint. With ``--jobs 2``
a recipe made of several runs (a study over seeds) trains them in two
processes, each claiming the runs it trains (:func:`mtl_course.store.cached_runs`).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from . import runtime, store


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mtl_course.train", description=__doc__.split("\n\n")[0])
    p.add_argument("recipes", nargs="+", metavar="RECIPE", help="recipe names, or `all`")
    p.add_argument("--profile", choices=runtime.PROFILES, default=None,
                   help="default: MTL_COURSE_PROFILE if set, else full on a GPU and quick elsewhere")
    p.add_argument("--out", type=Path, default=store.STORE_DIR,
                   help="folder of the weights and manifest.json (default: the store, mtl_course/trained)")
    p.add_argument("--checkpoint-dir", type=Path, default=None,
                   help="folder of the resumable checkpoints (default: <data dir>/checkpoints)")
    p.add_argument("--every", type=float, default=300.0, help="seconds between checkpoints (default 300)")
    p.add_argument("--fresh", action="store_true", help="delete the recipes' checkpoints and start afresh")
    p.add_argument("--jobs", type=int, choices=(1, 2), default=1,
                   help="2: a recipe made of several runs trains them in two processes (two cores)")
    return p


def chosen_recipes(names: list[str], profile: str) -> list[str]:
    """The recipes to train, each checked to exist and to have ``profile``; raises :class:`store.StoreError`."""
    if "all" in names:
        return [name for name, r in store.recipes().items() if profile == "quick" or r.full_config is not None]
    for name in names:
        store.recipe(name).config_for(profile)
    return list(dict.fromkeys(names))


def train_recipe(name: str, profile: str, out: Path, checkpoints: Path, every: float, fresh: bool,
                 say: Callable[[str], None] = print, jobs: int = 1) -> dict:
    """Train one recipe into ``out`` through its checkpoint, in ``jobs`` processes; returns its manifest entry."""
    checkpoint = store.run_checkpoint(name, profile, checkpoints, every)
    if fresh:
        checkpoint.remove()
    if not store.recipe(name).resumable:
        say(f"{name}: its recipe takes no checkpoint; if stopped, it starts again")
    elif checkpoint.path.is_file() or checkpoint.path.with_suffix("").is_dir():
        say(f"{name}: resuming from {checkpoint.path}")
    return store.train(name, out, profile=profile, checkpoint=checkpoint, jobs=jobs)


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    profile = args.profile or runtime.get_profile()
    try:
        names = chosen_recipes(args.recipes, profile)
    except store.StoreError as error:
        p.error(str(error))  # before anything trains
    checkpoints = args.checkpoint_dir or runtime.data_dir("checkpoints")
    total = 0.0
    bar = runtime.progress(names, desc=f"recipes ({profile} profile)", leave=True)
    for name in bar:
        bar.set_postfix_str(name)
        e = train_recipe(name, profile, args.out, checkpoints, args.every, args.fresh, bar.write, args.jobs)
        total += e["seconds"]
        bar.write(f"{name}: {e['seconds']:.0f} s, {e['bytes'] / 1e6:.2f} MB, metrics {e['metrics']}")
    print(f"trained {len(names)} model(s) in {total:.0f} s ({profile} profile) into {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    # the module that tests and the recipes' store see, not this __main__ copy
    from mtl_course import train  # noqa: PLW0406

    sys.exit(train.main())
