"""The architecture figure: Fig. 6 with the parts that each reduction of Fig. 8 switches off blacked out."""
from __future__ import annotations

from typing import Sequence

from .config import ENCODER_MODES, REDUCTIONS, SWITCHED_OFF

TITLES = {
    "m3tl": "M3TL (Fig. 6)",
    "mtl": "reduced to multi-task learning (Fig. 8a)",
    "meta": "reduced to meta-learning (Fig. 8b)",
    "transfer": "reduced to transfer learning (Fig. 8c)",
}


def _box(ax, x: float, y: float, w: float, h: float, text: str, *, off: bool = False, style: str = "scratch",
         dashed: bool = False) -> None:
    from matplotlib.patches import FancyBboxPatch

    face, edge, hatch, width = "white", "black", None, 1.0
    if style == "frozen":
        hatch = "xx"
    elif style == "finetune":
        face, edge, width = "#fde9c8", "#e08a00", 2.5
    if off:
        face, edge, hatch = "black", "black", None
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02", facecolor=face,
                                edgecolor=edge, hatch=hatch, linewidth=width, linestyle="--" if dashed else "-"))
    if off:  # blacked out as in the review's Fig. 8, but still named
        ax.text(x, y, f"{text}\n(off)", ha="center", va="center", fontsize=7, color="white")
    else:
        ax.text(x, y, text, ha="center", va="center", fontsize=7,
                bbox=dict(facecolor="white", edgecolor="none", pad=0.5) if style == "frozen" else None)


def _arrow(ax, a: tuple[float, float], b: tuple[float, float], off: bool = False) -> None:
    ax.annotate("", xy=b, xytext=a, arrowprops=dict(arrowstyle="->", color="0.75" if off else "black", lw=0.8))


def plot_architecture(ax, reduction: str = "m3tl", modalities: Sequence[str] = ("image", "profile"),
                      encoder_modes: Sequence[str] = ("frozen", "scratch"),
                      source_tasks: Sequence[str] = ("task 1", "task 2", "task 3"),
                      unseen_tasks: Sequence[str] = ("task 4", "task 5")):
    """Draw the generic network with the parts ``reduction`` switches off in black, named and marked "(off)" (Fig. 8).

    Hatched encoders are pre-trained and frozen, orange ones pre-trained and
    fine-tuned, plain ones trained from scratch; dashed heads are the unseen
    tasks added at meta-test. The grey frame marks what bi-level
    meta-optimisation trains.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if len(encoder_modes) != len(modalities) or any(m not in ENCODER_MODES for m in encoder_modes):
        raise ValueError(f"give one encoder mode from {ENCODER_MODES} per modality")
    off = set(SWITCHED_OFF[reduction])
    n_in = len(modalities)
    heads = list(source_tasks) + list(unseen_tasks)
    ys_in = [0.5 + (i - (n_in - 1) / 2) * 0.32 for i in range(n_in)]
    ys_head = [0.5 + (i - (len(heads) - 1) / 2) * 0.17 for i in range(len(heads))]
    from matplotlib.patches import Rectangle

    meta_off = "meta" in off
    ax.add_patch(Rectangle((0.43, 0.02), 0.55, 0.96, facecolor="black" if meta_off else "0.93", edgecolor="0.6",
                           alpha=0.25 if meta_off else 1.0, zorder=0))
    ax.text(0.705, 0.985, "bi-level meta-optimisation" + (" (off)" if meta_off else ""), ha="center", va="top",
            fontsize=7, color="0.3")
    for y, name, mode in zip(ys_in, modalities, encoder_modes):
        _box(ax, 0.07, y, 0.11, 0.12, name)
        pre_off = "pretrained" in off and mode != "scratch"
        label = f"{name} encoder\n({'scratch' if pre_off else mode})"
        _box(ax, 0.26, y, 0.18, 0.14, label, style="scratch" if pre_off else mode)
        _arrow(ax, (0.125, y), (0.17, y))
        _arrow(ax, (0.35, y), (0.445, 0.5), off="fusion" in off)
    _box(ax, 0.515, 0.5, 0.13, 0.3, "fusion\n(multimodal\nembedding)", off="fusion" in off)
    _box(ax, 0.67, 0.5, 0.09, 0.5, "shared\nback-\nbone", off="backbone" in off)
    _arrow(ax, (0.58, 0.5), (0.625, 0.5), off="fusion" in off or "backbone" in off)
    for i, (y, name) in enumerate(zip(ys_head, heads)):
        unseen = i >= len(source_tasks)
        _box(ax, 0.88, y, 0.17, 0.12, name, dashed=unseen, off=unseen and "unseen_tasks" in off)
        _arrow(ax, (0.715, 0.5), (0.795, y), off=unseen and "unseen_tasks" in off)
    ax.set(xlim=(0, 1), ylim=(0, 1), title=TITLES[reduction])
    ax.set_axis_off()
    return ax
