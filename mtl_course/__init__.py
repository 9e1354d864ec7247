"""mtl_course: transfer, multi-task, meta- and meta-transfer learning, as taught in the book.

Modules are named after the book's concepts and depend on each other one way,
each importing only from the groups before its own (:data:`LAYERS`):
``runtime, metrics, models, distributed -> store, data -> training -> transfer, multitask, meta
-> few_shot, meta_transfer, finetuning_theory, fusions, m3tl,
comparison``. ``viz``, ``widgets``,
``grading``, ``robustness`` and ``train`` sit at the edge (:data:`EDGE`): they may import the
core, the core never imports them. ``store`` holds the trained-model store
(``mtl_course/trained``) that chapters load instead of training; ``train`` is the
command that trains it (``python -m mtl_course.train``).
"""
from . import runtime

__version__ = "0.1.0"
REPOSITORY = "https://github.com/mtl-course/mtl_course"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("runtime", "metrics", "models", "distributed"),
    ("store", "data"),
    ("training",),
    ("transfer", "multitask", "meta"),
    ("few_shot", "meta_transfer", "finetuning_theory", "fusions", "m3tl", "comparison"),
)
"""The package's modules in dependency order: a module imports only from earlier groups."""
EDGE = ("viz", "widgets", "grading", "robustness", "train")
"""Modules for the notebooks, the instructors and the store's training command; they may import the core,
never the other way round."""

__all__ = ["runtime", "REPOSITORY", "__version__", "LAYERS", "EDGE"]
