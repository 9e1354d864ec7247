"""mtl_course: transfer, multi-task, meta- and meta-transfer learning, as taught in the book.

Modules are named after the book's concepts and depend on each other one way:
``runtime -> store -> data -> models -> training -> {transfer, multitask, meta} -> {meta_transfer, fusions, m3tl}``;
``viz``, ``widgets``, ``grading`` and ``robustness`` sit at the edge. ``store`` holds the
trained-model store (``mtl_course/trained``) that chapters load instead of training.
"""
from . import runtime

__version__ = "0.1.0"
REPOSITORY = "https://github.com/mtl-course/mtl_course"

__all__ = ["runtime", "REPOSITORY", "__version__"]
