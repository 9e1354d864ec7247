"""Tasks, episodes and the data sets the book uses (all offline by default)."""
from .episodes import (
    ClassSplit,
    Episode,
    EpisodeSampler,
    LabelledSet,
    Task,
    split_classes,
    split_examples,
    stack_episodes,
)
from .benchmarks import (
    Benchmark,
    DatasetNotFoundError,
    load_cifar_fs,
    load_fc100,
    load_mini_imagenet,
    load_omniglot,
)
from .digits import load_digits, permute_pixels
from .glyphs import glyph_alphabets, glyph_faces, glyph_stats, load_glyphs, render_glyph
from .multimodal import MultiModalSet, TaskEpisodes, multimodal_glyphs  # noqa: F401  (Chapter 8)
from .sinusoid import RegressionTasks, SineTask, SinusoidTasks

__all__ = [
    "Benchmark",
    "DatasetNotFoundError",
    "glyph_alphabets",
    "glyph_faces",
    "glyph_stats",
    "load_cifar_fs",
    "load_fc100",
    "load_glyphs",
    "load_mini_imagenet",
    "load_omniglot",
    "render_glyph",
    "ClassSplit",
    "Episode",
    "EpisodeSampler",
    "LabelledSet",
    "SineTask",
    "RegressionTasks",
    "SinusoidTasks",
    "Task",
    "load_digits",
    "permute_pixels",
    "split_classes",
    "split_examples",
    "stack_episodes",
]
