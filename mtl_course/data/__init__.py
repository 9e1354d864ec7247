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
from .digits import load_digits, permute_pixels
from .sinusoid import SineTask, SinusoidTasks

__all__ = [
    "ClassSplit",
    "Episode",
    "EpisodeSampler",
    "LabelledSet",
    "SineTask",
    "SinusoidTasks",
    "Task",
    "load_digits",
    "permute_pixels",
    "split_classes",
    "split_examples",
    "stack_episodes",
]
