"""Glyphs: an offline, Omniglot-like few-shot data set rendered from matplotlib's fonts.

Omniglot (Lake et al., 2015) has 1,623 handwritten characters from 50
alphabets, 20 drawings each, by 20 different people. Glyphs mirrors that
structure with the fonts that ship inside matplotlib, so that every chapter runs
without a download:

* **alphabets** are Unicode scripts and symbol sets (Latin, Greek, Cyrillic,
  Armenian, Georgian, Hebrew, Arabic, Lao, Canadian syllabics, Braille, ...),
  listed in :data:`ALPHABETS`;
* **characters** are the letters of those scripts that at least
  :data:`MIN_FACES` font faces can draw (a real glyph, not a ``.notdef`` box).
  Precomposed letters with a diacritic (``é``) are left out, and a character
  that looks like one already taken (Cyrillic ``А`` after Latin ``A``) is
  dropped, so no two classes share an image;
* **drawers** are font faces (DejaVu Sans/Serif/Sans Mono and STIX, each in
  regular, bold, italic and bold italic) times a random distortion. Drawing
  ``i`` of a character uses face ``i mod F`` of the ``F`` faces that have the
  glyph, in the order of :func:`glyph_faces`, and its own random rotation,
  shear, scale, translation and stroke-width change.

Images are ``image_size`` x ``image_size`` grey levels in ``[0, 1]``, a **white
glyph on a black background**, as Omniglot is used in the MAML line of work.
Rendering is deterministic: the same seed gives the same images bit for bit
(with a given matplotlib and its FreeType), and each character's drawings
depend only on the seed and the character, so a subset (``alphabets=``,
``max_per_alphabet=``) holds exactly the images of the full set. The first
call renders (5 to 20 s on a two-core CPU) and caches a compressed ``.npz``
(about 7 MB) under ``runtime.data_dir("glyphs")``; later calls read it in a
fraction of a second.

>>> glyphs = load_glyphs()
>>> split = split_classes(glyphs, by="group")   # whole alphabets, as Omniglot's background/evaluation
>>> episode = EpisodeSampler(glyphs, split.test, n_way=5, k_shot=1).sample()
"""
from __future__ import annotations

import hashlib
import time
import unicodedata
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.ft2font import FT2Font, LoadFlags

from .. import runtime
from .episodes import LabelledSet

GLYPHS_VERSION = 1
"""Bumped whenever a change would alter the rendered images (it is part of the cache file name)."""

MIN_FACES = 4
"""A character is kept only if at least this many faces can draw it."""

FACE_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSansMono.ttf",
    "STIXGeneral.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSansMono-Bold.ttf",
    "STIXGeneralBol.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "STIXGeneralItalic.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneralBolIta.ttf",
)
"""The font files (in ``matplotlib/mpl-data/fonts/ttf``) that act as drawers, in drawing order."""

LETTERS = ("Lu", "Ll", "Lt", "Lo")
SYMBOLS = ("So", "Sm")


@dataclass(frozen=True)
class Alphabet:
    """A script or symbol set: Unicode code-point ranges and the categories kept from them."""

    name: str
    ranges: tuple[tuple[int, int], ...]
    categories: tuple[str, ...] = LETTERS

    def candidates(self) -> list[str]:
        """Characters of the ranges in the kept categories, without precomposed or variant forms."""
        chars = []
        for first, last in self.ranges:
            for code in range(first, last + 1):
                char = chr(code)
                if unicodedata.category(char) in self.categories and not unicodedata.decomposition(char):
                    chars.append(char)
        return chars


ALPHABETS = (
    Alphabet(
        "Latin",
        ((0x41, 0x5A), (0x61, 0x7A), (0xC0, 0x24F), (0x1E00, 0x1EFF), (0x2C60, 0x2C7F), (0xA720, 0xA7FF)),
    ),
    Alphabet("IPA", ((0x250, 0x2AF), (0x1D00, 0x1DBF))),
    Alphabet("Greek", ((0x370, 0x3FF), (0x1F00, 0x1FFF))),
    Alphabet("Cyrillic", ((0x400, 0x52F), (0xA640, 0xA69F))),
    Alphabet("Armenian", ((0x530, 0x58F),)),
    Alphabet("Georgian Mkhedruli", ((0x10D0, 0x10FF),)),
    Alphabet("Georgian Khutsuri", ((0x10A0, 0x10CF), (0x2D00, 0x2D2F))),
    Alphabet("Hebrew", ((0x590, 0x5FF),)),
    Alphabet("Arabic", ((0x600, 0x6FF),)),
    Alphabet("Lao", ((0xE80, 0xEFF),)),
    Alphabet("Canadian syllabics", ((0x1400, 0x167F),)),
    Alphabet("Braille", ((0x2801, 0x283F),), ("So",)),
    Alphabet("Yijing hexagrams", ((0x4DC0, 0x4DFF),), ("So",)),
    Alphabet("Math operators", ((0x2200, 0x22FF),), SYMBOLS),
)
"""The alphabets, in label order; characters within an alphabet are in code-point order."""

# Geometry of a clean glyph on the high-resolution canvas (twice the image size).
SUPERSAMPLING = 2
EM_FRACTION = 0.8  # font size (em) as a fraction of the canvas side
ANCHOR_HEIGHT = 0.3  # height above the baseline, in em, that is put at the canvas centre
FIT_FRACTION = 0.85  # larger glyphs are shrunk to fit this fraction of the canvas
REFERENCE_SIZE = 28  # image size at which faces are counted and look-alikes removed
RENDER_BATCH = 64  # characters whose drawings are distorted together
LOOKALIKE_DISTANCE = 0.02  # relative L1 distance under which two clean glyphs count as the same

# Ranges of the random distortion of each drawing.
ROTATION_DEGREES = 10.0
SHEAR = 0.15
SCALE = (0.85, 1.05)
ASPECT = (0.9, 1.1)
SHIFT = 0.08  # as a fraction of the half-canvas
STROKE = (-0.6, 1.0)  # < 0 blends towards erosion, > 0 towards dilation


@dataclass(frozen=True)
class GlyphStats:
    """Summary of a rendered Glyphs set (see :func:`glyph_stats`)."""

    alphabets: dict[str, int]
    characters: int
    images: int
    image_size: int
    faces: list[str]
    render_seconds: float
    cache_path: Path
    cache_bytes: int

    def __str__(self) -> str:
        return (
            f"Glyphs: {len(self.alphabets)} alphabets, {self.characters} characters, {self.images} images "
            f"of {self.image_size}x{self.image_size}, {len(self.faces)} faces; rendered in "
            f"{self.render_seconds:.1f} s; cache {self.cache_bytes / 1e6:.1f} MB at {self.cache_path}"
        )


# ---------------------------------------------------------------------------
# Fonts and clean glyphs
# ---------------------------------------------------------------------------


def _face_name(font: FT2Font) -> str:
    style = "" if font.style_name in ("Book", "Regular") else f" {font.style_name}"
    return f"{font.family_name}{style}"


@lru_cache(maxsize=1)
def _fonts() -> dict[str, FT2Font]:
    """The drawer faces that this matplotlib ships, by name, in :data:`FACE_FILES` order."""
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    fonts = [FT2Font(str(folder / name)) for name in FACE_FILES if (folder / name).is_file()]
    if len(fonts) < MIN_FACES:
        raise RuntimeError(
            f"found only {len(fonts)} of the fonts Glyphs draws with in {folder}; "
            "reinstall matplotlib, which ships them."
        )
    return {_face_name(font): font for font in fonts}


def glyph_faces() -> list[str]:
    """Names of the font faces that act as drawers, in the order drawings cycle through them."""
    return list(_fonts())


@dataclass(frozen=True)
class _Ink:
    """A glyph's anti-aliased ink bitmap and where its top-left pixel lies relative to its anchor."""

    bitmap: np.ndarray
    left: float  # pixels right of the anchor
    top: float  # pixels above the anchor


def _glyph_ink(font: FT2Font, char: str, em_pixels: float) -> _Ink | None:
    """The ink of ``char`` at ``em_pixels`` per em, or ``None`` if the face lacks the glyph.

    The anchor is the middle of the glyph's advance, :data:`ANCHOR_HEIGHT` em
    above the baseline, so glyphs keep their natural position (a raised dot
    stays raised, as Braille needs).
    """
    if font.get_char_index(ord(char)) == 0:
        return None
    font.set_size(em_pixels, 72)
    glyph = font.load_char(ord(char), LoadFlags.NO_HINTING)
    font.set_text(char, flags=LoadFlags.NO_HINTING)
    font.draw_glyphs_to_bitmap(antialiased=True)
    image = np.asarray(font.get_image())
    rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
    if len(rows) == 0 or image.max() < 128:
        return None
    return _Ink(
        bitmap=image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1],
        left=(glyph.horiBearingX - glyph.horiAdvance / 2) / 64 + cols[0],
        top=glyph.horiBearingY / 64 - ANCHOR_HEIGHT * em_pixels - rows[0],
    )


def _place_on_canvas(ink: _Ink, canvas: int) -> torch.Tensor:
    """Put the anchor of ``ink`` at the centre of a square ``canvas``.

    A glyph larger than :data:`FIT_FRACTION` of the canvas is first shrunk
    about its anchor, and one that would stick out of that central box is
    moved back inside it.
    """
    glyph = torch.from_numpy(ink.bitmap.astype(np.float32) / 255.0)
    limit = FIT_FRACTION * canvas
    factor = min(1.0, limit / max(glyph.shape))
    if factor < 1:
        shape = (max(1, round(glyph.shape[0] * factor)), max(1, round(glyph.shape[1] * factor)))
        glyph = F.interpolate(glyph[None, None], size=shape, mode="bilinear", antialias=True)[0, 0]
    height, width = glyph.shape
    margin = (canvas - limit) / 2
    inside = lambda start, extent: int(round(min(max(start, margin), canvas - margin - extent)))  # noqa: E731
    top = inside(canvas / 2 - factor * ink.top, height)
    left = inside(canvas / 2 + factor * ink.left, width)
    out = torch.zeros(canvas, canvas)
    out[top : top + height, left : left + width] = glyph
    return out


def _clean_canvas(char: str, face: str, canvas: int) -> torch.Tensor | None:
    ink = _glyph_ink(_fonts()[face], char, EM_FRACTION * canvas)
    return None if ink is None else _place_on_canvas(ink, canvas)


def _downsample(canvases: torch.Tensor) -> torch.Tensor:
    """Box-filter ``(n, 1, S*k, S*k)`` canvases down to ``(n, 1, S, S)``."""
    return F.avg_pool2d(canvases, SUPERSAMPLING)


def render_glyph(char: str, face: str | None = None, size: int = 28) -> torch.Tensor:
    """A clean, upright ``(size, size)`` image of ``char`` in ``face`` (white on black, in ``[0, 1]``).

    The glyph is centred and scaled exactly as the undistorted drawings of
    :func:`load_glyphs`, so it can serve as a dense target (e.g. "draw the clean
    character"). ``face`` defaults to the first face of :func:`glyph_faces` that
    has the character.
    """
    _check_int("size", size, 8)
    if not isinstance(char, str) or len(char) != 1:
        raise ValueError(f"char must be a single character, got {char!r}")
    faces = _faces_with_glyph(char) if face is None else [face]
    if face is not None and face not in _fonts():
        raise ValueError(f"unknown face {face!r}; choose one of {glyph_faces()}")
    canvas = _clean_canvas(char, faces[0], size * SUPERSAMPLING) if faces else None
    if canvas is None:
        where = f"face {face!r}" if face else "any Glyphs face"
        raise ValueError(f"{char!r} (U+{ord(char):04X}) has no glyph in {where}")
    return _downsample(canvas[None, None])[0, 0]


# ---------------------------------------------------------------------------
# The catalogue: which characters, in which faces
# ---------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _faces_with_glyph(char: str) -> tuple[str, ...]:
    """The faces (in :func:`glyph_faces` order) that draw ``char`` with visible ink."""
    em = EM_FRACTION * REFERENCE_SIZE * SUPERSAMPLING
    return tuple(name for name, font in _fonts().items() if _glyph_ink(font, char, em) is not None)


def _drop_lookalikes(chars: list[str]) -> list[bool]:
    """Mark each character that does not look like an earlier one (clean glyph in its first face)."""
    canvas = REFERENCE_SIZE * SUPERSAMPLING
    clean = torch.stack([_clean_canvas(c, _faces_with_glyph(c)[0], canvas) for c in chars])
    images = _downsample(clean.unsqueeze(1)).flatten(1)
    ink = images.sum(dim=1)
    distance = torch.cdist(images, images, p=1) / torch.maximum(ink[:, None], ink[None, :])
    earlier = torch.ones_like(distance, dtype=torch.bool).tril(diagonal=-1)
    return (~((distance < LOOKALIKE_DISTANCE) & earlier).any(dim=1)).tolist()


@lru_cache(maxsize=1)
def _catalogue() -> dict[str, tuple[str, ...]]:
    drawable = {a.name: [c for c in a.candidates() if len(_faces_with_glyph(c)) >= MIN_FACES] for a in ALPHABETS}
    chars = [c for group in drawable.values() for c in group]
    keep = dict(zip(chars, _drop_lookalikes(chars)))
    return {name: tuple(c for c in group if keep[c]) for name, group in drawable.items()}


def glyph_alphabets() -> dict[str, list[str]]:
    """The characters of each alphabet, as used by :func:`load_glyphs` (about a second to compute)."""
    return {name: list(chars) for name, chars in _catalogue().items()}


def _select(alphabets: Sequence[str] | None, max_per_alphabet: int | None) -> list[tuple[str, str]]:
    """(alphabet, character) pairs of the requested subset, in label order."""
    catalogue = _catalogue()
    names = list(catalogue) if alphabets is None else list(dict.fromkeys(alphabets))
    unknown = [n for n in names if n not in catalogue]
    if unknown:
        raise ValueError(f"unknown alphabet(s) {unknown}; choose from {list(catalogue)}")
    return [(name, c) for name in names for c in catalogue[name][:max_per_alphabet]]


# ---------------------------------------------------------------------------
# Drawings: distortions of the clean glyphs
# ---------------------------------------------------------------------------


def _matrices(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """A stack of 2x2 matrices ``[[a, b], [c, d]]`` from four equally long vectors."""
    return np.stack([np.stack([a, b], -1), np.stack([c, d], -1)], -2)


def _distortions(seed: int, char: str, drawings: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Affine sampling grids ``theta`` (drawings, 2, 3) and stroke changes (drawings,) for one character.

    The random stream depends only on ``seed`` and the character, so subsets
    reproduce the drawings of the full set.
    """
    u = np.random.default_rng([seed, ord(char)]).uniform(size=(drawings, 7))
    lerp = lambda lo, hi, t: lo + (hi - lo) * t  # noqa: E731
    angle = np.deg2rad(lerp(-ROTATION_DEGREES, ROTATION_DEGREES, u[:, 0]))
    shear = lerp(-SHEAR, SHEAR, u[:, 1])
    scale, aspect = lerp(*SCALE, u[:, 2]), lerp(*ASPECT, u[:, 3])
    shift = lerp(-SHIFT, SHIFT, u[:, 4:6])
    cos, sin, one, zero = np.cos(angle), np.sin(angle), np.ones(drawings), np.zeros(drawings)
    rotation = _matrices(cos, -sin, sin, cos)
    shearing = _matrices(one, shear, zero, one)
    scaling = _matrices(scale * aspect, zero, zero, scale / aspect)
    forward = rotation @ shearing @ scaling  # glyph -> drawing
    inverse = np.linalg.inv(forward)  # grid_sample needs drawing -> glyph
    theta = np.concatenate([inverse, -(inverse @ shift[:, :, None])], axis=2)
    return torch.from_numpy(theta).float(), torch.from_numpy(lerp(*STROKE, u[:, 6])).float()


def _dilate(canvases: torch.Tensor) -> torch.Tensor:
    """Grey-level dilation with a 3x3 square (a separable running maximum)."""
    padded = F.pad(canvases, (1, 1, 1, 1))
    rows = torch.maximum(torch.maximum(padded[..., :-2], padded[..., 1:-1]), padded[..., 2:])
    return torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


def _change_stroke(canvases: torch.Tensor, stroke: torch.Tensor) -> torch.Tensor:
    """Blend each canvas towards its dilation (stroke > 0) or erosion (stroke < 0)."""
    sign = stroke.sign().view(-1, 1, 1, 1)
    target = sign * _dilate(sign * canvases)  # erosion is the dilation of the negative
    weight = stroke.abs().view(-1, 1, 1, 1)
    return (1 - weight) * canvases + weight * target


def _draw(canvases: torch.Tensor, theta: torch.Tensor, stroke: torch.Tensor, size: int) -> np.ndarray:
    """Distort ``(n, 1, S*k, S*k)`` clean canvases and return ``(n, S, S)`` uint8 drawings."""
    grid = F.affine_grid(theta, list(canvases.shape), align_corners=False)
    warped = F.grid_sample(canvases, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    small = _downsample(_change_stroke(warped, stroke))
    return (small[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def _drawing_batch(
    chars: Sequence[str], seed: int, image_size: int, drawings: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``drawings`` images of each character, class by class, and the face index of each image.

    Drawing ``i`` of a character uses face ``i mod F`` of its ``F`` faces; the
    face index points into :func:`glyph_faces`.
    """
    canvas = image_size * SUPERSAMPLING
    face_index = {name: i for i, name in enumerate(glyph_faces())}
    clean, thetas, strokes, face_ids = [], [], [], []
    for char in chars:
        faces = _faces_with_glyph(char)
        per_face = [_clean_canvas(char, face, canvas) for face in faces]
        which = np.arange(drawings) % len(faces)
        clean.extend(per_face[i] for i in which)
        face_ids.extend(face_index[faces[i]] for i in which)
        theta, stroke = _distortions(seed, char, drawings)
        thetas.append(theta)
        strokes.append(stroke)
    images = _draw(torch.stack(clean).unsqueeze(1), torch.cat(thetas), torch.cat(strokes), image_size)
    return images, np.array(face_ids, dtype=np.int8)


def _render(alphabets: Sequence[str] | None, max_per_alphabet: int | None, seed: int, image_size: int,
            drawings: int) -> dict[str, np.ndarray]:
    """Render a Glyphs set into the arrays that are cached."""
    started = time.perf_counter()
    selection = _select(alphabets, max_per_alphabet)
    chars = [c for _, c in selection]
    batches = [chars[i : i + RENDER_BATCH] for i in range(0, len(chars), RENDER_BATCH)]
    batches = runtime.progress(batches, desc="Rendering glyphs")
    parts = [_drawing_batch(batch, seed, image_size, drawings) for batch in batches]
    return {
        "images": np.concatenate([images for images, _ in parts]),
        "labels": np.repeat(np.arange(len(selection), dtype=np.int32), drawings),
        "drawing_faces": np.concatenate([faces for _, faces in parts]),
        "characters": np.array(chars),
        "alphabets": np.array([a for a, _ in selection]),
        "faces": np.array(glyph_faces()),
        "render_seconds": np.array(time.perf_counter() - started),
        "matplotlib_version": np.array(matplotlib.__version__),
    }


# ---------------------------------------------------------------------------
# Cache and public loaders
# ---------------------------------------------------------------------------


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _cache_path(root: Path, seed: int, image_size: int, drawings: int,
                alphabets: Sequence[str] | None, max_per_alphabet: int | None) -> Path:
    name = f"glyphs-v{GLYPHS_VERSION}-seed{seed}-{image_size}px-{drawings}drawings"
    if alphabets is not None or max_per_alphabet is not None:
        key = repr((None if alphabets is None else list(alphabets), max_per_alphabet)).encode()
        name += "-subset" + hashlib.sha1(key).hexdigest()[:10]
    return root / f"{name}.npz"


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or ``None`` if the file is missing or unreadable (it is then rendered again)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _glyph_arrays(
    seed: int,
    image_size: int,
    drawings: int,
    root: Path | str | None,
    alphabets: Sequence[str] | None,
    max_per_alphabet: int | None,
) -> tuple[dict[str, np.ndarray], Path]:
    """The arrays of a Glyphs set and its cache file, read from the cache or rendered into it."""
    _check_int("seed", seed, 0)
    _check_int("image_size", image_size, 8)
    _check_int("drawings", drawings, 1)
    if max_per_alphabet is not None:
        _check_int("max_per_alphabet", max_per_alphabet, 1)
    if isinstance(alphabets, str):
        alphabets = [alphabets]
    folder = runtime.data_dir("glyphs") if root is None else Path(root).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    path = _cache_path(folder, int(seed), int(image_size), int(drawings), alphabets, max_per_alphabet)
    arrays = _read_cache(path)
    if arrays is None:
        arrays = _render(alphabets, max_per_alphabet, int(seed), int(image_size), int(drawings))
        runtime.write_atomically(path, lambda file: np.savez_compressed(file, **arrays))
    return arrays, path


def load_glyphs(
    seed: int = 0,
    image_size: int = 28,
    drawings: int = 20,
    root: Path | str | None = None,
    *,
    alphabets: Sequence[str] | None = None,
    max_per_alphabet: int | None = None,
) -> LabelledSet:
    """The Glyphs few-shot set: ``X`` of shape ``(N, 1, image_size, image_size)`` in ``[0, 1]``.

    Examples are ordered by class, ``drawings`` per class. ``class_names[c]`` is
    the character followed by its Unicode name (``"α GREEK SMALL LETTER ALPHA"``;
    ``class_names[c][0]`` is the character itself) and ``class_groups[c]`` its
    alphabet. ``alphabets`` keeps only the named alphabets (see
    :data:`ALPHABETS`), in the order given, and ``max_per_alphabet`` only the
    first characters of each, for quick experiments and tests. The set is
    cached under ``root`` (default ``runtime.data_dir("glyphs")``) and read
    from there next time.
    """
    arrays, _ = _glyph_arrays(seed, image_size, drawings, root, alphabets, max_per_alphabet)
    X = torch.from_numpy(arrays["images"]).unsqueeze(1).float().div_(255)
    names = [f"{c} {unicodedata.name(c, f'U+{ord(c):04X}')}" for c in arrays["characters"].tolist()]
    return LabelledSet(X, torch.from_numpy(arrays["labels"]).long(), names, arrays["alphabets"].tolist())


def glyph_stats(
    seed: int = 0,
    image_size: int = 28,
    drawings: int = 20,
    root: Path | str | None = None,
    *,
    alphabets: Sequence[str] | None = None,
    max_per_alphabet: int | None = None,
) -> GlyphStats:
    """Counts, faces, render time and cache size of a Glyphs set (rendering it first if needed)."""
    arrays, path = _glyph_arrays(seed, image_size, drawings, root, alphabets, max_per_alphabet)
    groups = arrays["alphabets"].tolist()
    used = sorted(set(arrays["drawing_faces"].tolist()))
    return GlyphStats(
        alphabets={name: groups.count(name) for name in dict.fromkeys(groups)},
        characters=len(groups),
        images=len(arrays["labels"]),
        image_size=int(arrays["images"].shape[-1]),
        faces=[str(arrays["faces"][i]) for i in used],
        render_seconds=float(arrays["render_seconds"]),
        cache_path=path,
        cache_bytes=path.stat().st_size,
    )
