"""Loaders for the published few-shot benchmarks: Omniglot, CIFAR-FS, FC100 and miniImageNet.

The book runs offline on :mod:`~mtl_course.data.glyphs`; these loaders are for
readers with the real data. Each returns a :class:`Benchmark`, a named pair of
the whole data set as a :class:`~mtl_course.data.episodes.LabelledSet` and the
benchmark's standard :class:`~mtl_course.data.episodes.ClassSplit`::

    data, split = load_cifar_fs(download=True)
    sampler = EpisodeSampler(data, split.train, n_way=5, k_shot=1)

Images are float tensors in ``[0, 1]`` of shape ``(N, C, H, W)``. Data live
under ``runtime.data_dir(<name>)`` unless ``root`` says otherwise, in the
layout that torchvision uses. When they are missing and ``download=False`` (or
the download fails, e.g. offline), a :class:`DatasetNotFoundError` says which
files to fetch from where and which folder to put them in.

* :func:`load_omniglot`: 1,623 characters of 50 alphabets; test = the 20
  evaluation alphabets, train = the background alphabets but a few kept for
  validation;
* :func:`load_cifar_fs`: CIFAR-100's 100 classes split 64/16/20 (Bertinetto et al., 2019);
* :func:`load_fc100`: CIFAR-100 split by superclass, 12/4/4 superclasses or
  60/20/20 classes (Oreshkin et al., 2018);
* :func:`load_mini_imagenet`: 100 ImageNet classes split 64/16/20 (Ravi &
  Larochelle, 2017), from a folder you provide.
"""
from __future__ import annotations

import csv
import pickle
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .. import runtime
from .episodes import ClassSplit, LabelledSet

OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/{}.zip"
OMNIGLOT_MD5 = {
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
MINI_IMAGENET_SPLITS_URL = "https://github.com/twitter/meta-learning-lstm/tree/master/data/miniImagenet"
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

CIFAR100_SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
"""The 20 CIFAR-100 superclasses and their 5 classes each."""

CIFAR_FS_SPLIT: dict[str, tuple[str, ...]] = {
    "train": (
        "apple", "aquarium_fish", "bear", "bee", "bottle", "bowl", "boy", "bridge", "bus", "can",
        "castle", "caterpillar", "chair", "clock", "cloud", "cockroach", "couch", "cup", "dinosaur",
        "dolphin", "elephant", "forest", "girl", "hamster", "house", "kangaroo", "keyboard",
        "lawn_mower", "lion", "lizard", "lobster", "mountain", "mouse", "mushroom", "oak_tree",
        "orange", "orchid", "palm_tree", "pear", "pine_tree", "plate", "porcupine", "possum",
        "rabbit", "raccoon", "ray", "road", "seal", "shrew", "skunk", "skyscraper", "snake",
        "spider", "squirrel", "streetcar", "sunflower", "tank", "tiger", "train", "trout", "tulip",
        "turtle", "willow_tree", "wolf",
    ),
    "val": (
        "beaver", "beetle", "butterfly", "camel", "cattle", "crab", "crocodile", "flatfish", "lamp",
        "maple_tree", "motorcycle", "otter", "sea", "shark", "television", "tractor",
    ),
    "test": (
        "baby", "bed", "bicycle", "chimpanzee", "fox", "leopard", "man", "pickup_truck", "plain",
        "poppy", "rocket", "rose", "snail", "sweet_pepper", "table", "telephone", "wardrobe",
        "whale", "woman", "worm",
    ),
}
"""CIFAR-FS classes per split (Bertinetto et al., 2019): 64 / 16 / 20."""

FC100_SPLIT: dict[str, tuple[str, ...]] = {
    "train": (
        "fish", "flowers", "food_containers", "fruit_and_vegetables", "household_electrical_devices",
        "household_furniture", "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
        "reptiles", "trees", "vehicles_1", "vehicles_2",
    ),
    "val": ("large_carnivores", "large_omnivores_and_herbivores", "non-insect_invertebrates", "small_mammals"),
    "test": ("aquatic_mammals", "insects", "medium_mammals", "people"),
}
"""FC100 superclasses per split (Oreshkin et al., 2018): 12 / 4 / 4, i.e. 60 / 20 / 20 classes."""


class Benchmark(NamedTuple):
    """A benchmark: all its examples and its standard split of the classes (unpacks as ``data, split``)."""

    data: LabelledSet
    split: ClassSplit


class DatasetNotFoundError(FileNotFoundError):
    """A benchmark's files are missing; the message says what to download, from where, and where to put it."""


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------


def _root(root: Path | str | None, name: str) -> Path:
    return runtime.data_dir(name) if root is None else Path(root).expanduser()


def _check_options(image_size: int, max_per_class: int | None) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}")
    if max_per_class is not None and (isinstance(max_per_class, bool) or not isinstance(max_per_class, int)
                                      or max_per_class < 1):
        raise ValueError(f"max_per_class must be None or an integer >= 1, got {max_per_class!r}")


def _download(url: str, folder: Path, md5: str, instructions: str) -> None:
    """Download and extract an archive with torchvision, or explain how to do it by hand."""
    try:
        from torchvision.datasets.utils import download_and_extract_archive
    except ImportError as error:
        raise DatasetNotFoundError(
            "download=True needs torchvision (pip install torchvision).\n" + instructions
        ) from error
    try:
        download_and_extract_archive(url, str(folder), md5=md5)
    except Exception as error:  # offline, proxy, checksum, disk: all leave the data missing
        raise DatasetNotFoundError(f"downloading {url} failed ({error}).\n{instructions}") from error


def _read_image(path: Path, mode: str, size: int) -> np.ndarray:
    """An image file as a ``(size, size)`` or ``(size, size, 3)`` uint8 array (anti-aliased resize)."""
    with Image.open(path) as image:
        image = image.convert(mode)
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.LANCZOS)
        return np.asarray(image, dtype=np.uint8)


def _to_float_images(images: np.ndarray) -> torch.Tensor:
    """``(N, H, W)`` or ``(N, H, W, C)`` uint8 images as an ``(N, C, H, W)`` float tensor in ``[0, 1]``."""
    tensor = torch.from_numpy(images)
    tensor = tensor.unsqueeze(1) if tensor.dim() == 3 else tensor.permute(0, 3, 1, 2)
    return tensor.float().div_(255)


def _first_per_class(labels: np.ndarray, max_per_class: int | None) -> np.ndarray:
    """Row indices grouped by class, keeping at most ``max_per_class`` rows (in file order) of each."""
    order = np.argsort(labels, kind="stable")
    if max_per_class is None:
        return order
    rank = np.arange(len(order)) - np.searchsorted(labels[order], labels[order])
    return order[rank < max_per_class]


def _split_by_names(class_names: Sequence[str], split: dict[str, Sequence[str]], source: Path) -> ClassSplit:
    """A :class:`ClassSplit` from lists of class names; every listed name must be present."""
    index = {name: c for c, name in enumerate(class_names)}
    missing = [n for names in split.values() for n in names if n not in index]
    if missing:
        raise ValueError(f"the data in {source} lack the classes {missing[:5]}...; are these the official files?")
    return ClassSplit(*(sorted(index[n] for n in split[part]) for part in SPLITS))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir())


# ---------------------------------------------------------------------------
# Omniglot
# ---------------------------------------------------------------------------


def _omniglot_instructions(root: Path, missing: Sequence[str]) -> str:
    urls = "\n".join(f"  {OMNIGLOT_URL.format(name)}" for name in missing)
    return (
        f"Omniglot is missing from {root}. Download\n{urls}\n"
        f"and unzip each into {root / 'omniglot-py'}, so that "
        f"{root / 'omniglot-py' / 'images_background'}/<alphabet>/<character>/*.png exists "
        "(the layout of torchvision.datasets.Omniglot), or call load_omniglot(download=True) "
        "on a machine with internet access."
    )


def _omniglot_folders(root: Path, download: bool) -> dict[str, Path]:
    folders = {name: root / "omniglot-py" / name for name in OMNIGLOT_MD5}
    missing = [name for name, folder in folders.items() if not folder.is_dir()]
    if missing and not download:
        raise DatasetNotFoundError(_omniglot_instructions(root, missing))
    for name in missing:
        instructions = _omniglot_instructions(root, [name])
        _download(OMNIGLOT_URL.format(name), root / "omniglot-py", OMNIGLOT_MD5[name], instructions)
    return folders


def load_omniglot(
    root: Path | str | None = None,
    download: bool = False,
    *,
    image_size: int = 28,
    val_alphabets: int = 5,
    max_per_class: int | None = None,
    seed: int = 0,
) -> Benchmark:
    """Omniglot (Lake et al., 2015): 1,623 characters of 50 alphabets, 20 drawings each.

    Reads torchvision's layout ``root/omniglot-py/images_{background,evaluation}/
    <alphabet>/<character>/*.png`` (default ``root``: ``runtime.data_dir("omniglot")``).
    Drawings are inverted to white strokes on black, like Glyphs and the MAML
    line of work, and resized to ``image_size`` (28) with anti-aliasing.
    ``class_names`` are ``"<alphabet>/<character>"`` and ``class_groups`` the
    alphabets. The split is the official one: test = the 20 evaluation
    alphabets; the 30 background alphabets give training, except
    ``val_alphabets`` of them (chosen with ``seed``) kept for validation.
    """
    _check_options(image_size, max_per_class)
    root = _root(root, "omniglot")
    folders = _omniglot_folders(root, download)
    names, groups, images, labels, part_of_class = [], [], [], [], []
    for part, folder in folders.items():
        for alphabet in _subfolders(folder):
            for character in _subfolders(alphabet):
                files = _image_files(character)[:max_per_class]
                labels.extend([len(names)] * len(files))
                images.extend(files)
                names.append(f"{alphabet.name}/{character.name}")
                groups.append(alphabet.name)
                part_of_class.append(part)
    split = _omniglot_split(groups, part_of_class, val_alphabets, seed)
    pixels = np.stack([255 - _read_image(p, "L", image_size) for p in runtime.progress(images, desc="Omniglot")])
    return Benchmark(LabelledSet(_to_float_images(pixels), torch.tensor(labels), names, groups), split)


def _omniglot_split(groups: list[str], part_of_class: list[str], val_alphabets: int, seed: int) -> ClassSplit:
    background = list(dict.fromkeys(g for g, p in zip(groups, part_of_class) if p == "images_background"))
    if not 0 <= val_alphabets < len(background):
        raise ValueError(
            f"val_alphabets must lie in 0..{len(background) - 1} (background alphabets), got {val_alphabets}"
        )
    held_out = set(np.random.default_rng(seed).choice(background, size=val_alphabets, replace=False).tolist())
    test = [c for c, p in enumerate(part_of_class) if p == "images_evaluation"]
    val = [c for c, g in enumerate(groups) if g in held_out]
    train = sorted(set(range(len(groups))) - set(test) - set(val))
    return ClassSplit(train, val, test)


# ---------------------------------------------------------------------------
# CIFAR-100 based: CIFAR-FS and FC100
# ---------------------------------------------------------------------------


def _cifar100_instructions(root: Path) -> str:
    return (
        f"CIFAR-100 is missing from {root}. Download {CIFAR100_URL} (the python version, about 170 MB) "
        f"and extract it into {root}, so that {root / 'cifar-100-python'}/train, /test and /meta exist "
        "(the layout of torchvision.datasets.CIFAR100), or pass download=True on a machine with internet access."
    )


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as file:
        return pickle.load(file, encoding="latin1")


def _load_cifar100(
    root: Path | str | None, download: bool, image_size: int, max_per_class: int | None
) -> tuple[LabelledSet, Path]:
    """All 60,000 CIFAR-100 images (train and test files) by fine class; groups are the superclasses."""
    _check_options(image_size, max_per_class)
    root = _root(root, "cifar100")
    folder = root / "cifar-100-python"
    files = [folder / name for name in ("train", "test", "meta")]
    if not all(f.is_file() for f in files):
        if not download:
            raise DatasetNotFoundError(_cifar100_instructions(root))
        _download(CIFAR100_URL, root, CIFAR100_MD5, _cifar100_instructions(root))
    parts = [_unpickle(f) for f in files[:2]]
    meta = _unpickle(files[2])
    fine = np.concatenate([np.asarray(p["fine_labels"]) for p in parts])
    coarse = np.concatenate([np.asarray(p["coarse_labels"]) for p in parts])
    rows = _first_per_class(fine, max_per_class)
    pixels = np.concatenate([np.asarray(p["data"], dtype=np.uint8) for p in parts])[rows]
    images = pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    X = _to_float_images(np.ascontiguousarray(images))
    if image_size != 32:
        X = F.interpolate(X, size=(image_size, image_size), mode="bilinear", antialias=True).clamp_(0, 1)
    superclass_of = {int(f): int(c) for f, c in zip(fine, coarse)}
    names = list(meta["fine_label_names"])
    groups = [meta["coarse_label_names"][superclass_of[c]] for c in range(len(names))]
    return LabelledSet(X, torch.from_numpy(fine[rows]).long(), names, groups), folder


def load_cifar_fs(
    root: Path | str | None = None,
    download: bool = False,
    *,
    image_size: int = 32,
    max_per_class: int | None = None,
) -> Benchmark:
    """CIFAR-FS (Bertinetto et al., 2019): the 100 CIFAR-100 classes, 600 images each, split 64/16/20.

    Reads torchvision's layout ``root/cifar-100-python/{train,test,meta}``
    (default ``root``: ``runtime.data_dir("cifar100")``). Classes are numbered
    as CIFAR-100's fine labels; ``class_groups`` are the superclasses. The
    split is :data:`CIFAR_FS_SPLIT`. Images are ``(3, 32, 32)`` (about 740 MB
    as floats for all 60,000; ``max_per_class`` keeps fewer).
    """
    data, source = _load_cifar100(root, download, image_size, max_per_class)
    return Benchmark(data, _split_by_names(data.class_names, CIFAR_FS_SPLIT, source))


def load_fc100(
    root: Path | str | None = None,
    download: bool = False,
    *,
    image_size: int = 32,
    max_per_class: int | None = None,
) -> Benchmark:
    """FC100 (Oreshkin et al., 2018): CIFAR-100 split by superclass, 12/4/4 superclasses = 60/20/20 classes.

    The same data as :func:`load_cifar_fs` (same files and class numbering);
    only the split differs, :data:`FC100_SPLIT`, which keeps whole
    superclasses apart so that test classes are semantically far from
    training ones.
    """
    data, source = _load_cifar100(root, download, image_size, max_per_class)
    missing = sorted({g for part in SPLITS for g in FC100_SPLIT[part]} - set(data.groups))
    if missing:
        raise ValueError(f"the data in {source} lack the superclasses {missing}; are these the official files?")
    part_classes = [[c for c, g in enumerate(data.class_groups) if g in FC100_SPLIT[part]] for part in SPLITS]
    return Benchmark(data, ClassSplit(*part_classes))


# ---------------------------------------------------------------------------
# miniImageNet
# ---------------------------------------------------------------------------


def _mini_imagenet_instructions(root: Path) -> str:
    return (
        f"miniImageNet was not found in {root}. It cannot be downloaded automatically: its images "
        "come from ImageNet (ILSVRC-2012 training set), which you must obtain under ImageNet's terms. "
        f"Put it in {root} in either layout:\n"
        f"  {root}/train/<wnid>/*.jpg, {root}/val/<wnid>/*.jpg, {root}/test/<wnid>/*.jpg "
        "(one folder per class, 64/16/20 classes of 600 images), or\n"
        f"  {root}/images/*.jpg with {root}/train.csv, val.csv and test.csv (columns filename,label), "
        f"the split of Ravi & Larochelle (2017) from {MINI_IMAGENET_SPLITS_URL}."
    )


def _mini_imagenet_files(root: Path) -> dict[str, dict[str, list[Path]]]:
    """For each split, the image files of each class (wnid), from either accepted layout."""
    if all((root / f"{part}.csv").is_file() for part in SPLITS) and (root / "images").is_dir():
        splits: dict[str, dict[str, list[Path]]] = {}
        for part in SPLITS:
            with open(root / f"{part}.csv", newline="") as file:
                rows = list(csv.DictReader(file))
            classes: dict[str, list[Path]] = {}
            for row in rows:
                classes.setdefault(row["label"], []).append(root / "images" / row["filename"])
            splits[part] = {wnid: sorted(files) for wnid, files in sorted(classes.items())}
        return splits
    if all((root / part).is_dir() for part in SPLITS):
        return {part: {c.name: _image_files(c) for c in _subfolders(root / part)} for part in SPLITS}
    raise DatasetNotFoundError(_mini_imagenet_instructions(root))


def load_mini_imagenet(
    root: Path | str | None = None,
    *,
    image_size: int = 84,
    max_per_class: int | None = None,
) -> Benchmark:
    """miniImageNet (Vinyals et al., 2016; split of Ravi & Larochelle, 2017) from a folder you provide.

    Accepted layouts under ``root`` (default ``runtime.data_dir("mini_imagenet")``):
    ``{train,val,test}/<wnid>/*.jpg``, or ``images/*.jpg`` with
    ``{train,val,test}.csv`` listing ``filename,label``. Images are resized to
    ``image_size`` x ``image_size`` (84) RGB. Classes are numbered train, then
    val, then test, each in sorted order; ``class_names`` are the wnids and the
    split follows the folders (or CSV files). All 60,000 images take about
    5 GB as floats; ``max_per_class`` keeps fewer.
    """
    _check_options(image_size, max_per_class)
    root = _root(root, "mini_imagenet")
    splits = _mini_imagenet_files(root)
    empty = [part for part, classes in splits.items() if not classes]
    if empty:
        message = f"the {'/'.join(empty)} split(s) hold no classes.\n"
        raise DatasetNotFoundError(message + _mini_imagenet_instructions(root))
    names, files, labels, ids = [], [], [], {}
    for part in SPLITS:
        ids[part] = list(range(len(names), len(names) + len(splits[part])))
        for wnid, paths in splits[part].items():
            kept = paths[:max_per_class]
            labels.extend([len(names)] * len(kept))
            files.extend(kept)
            names.append(wnid)
    pixels = np.stack([_read_image(p, "RGB", image_size) for p in runtime.progress(files, desc="miniImageNet")])
    data = LabelledSet(_to_float_images(pixels), torch.tensor(labels), names)
    return Benchmark(data, ClassSplit(ids["train"], ids["val"], ids["test"]))
