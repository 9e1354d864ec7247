"""Tests of the benchmark loaders on tiny fixtures written in each benchmark's real on-disk format."""
from __future__ import annotations

import csv
import pickle
import re
import socket
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

from mtl_course.data import benchmarks
from mtl_course.data.benchmarks import (
    CIFAR100_SUPERCLASSES,
    CIFAR_FS_SPLIT,
    FC100_SPLIT,
    DatasetNotFoundError,
    load_cifar_fs,
    load_fc100,
    load_mini_imagenet,
    load_omniglot,
)
from mtl_course.data.episodes import EpisodeSampler

OMNIGLOT_ALPHABETS = {
    "images_background": {"Latin": 3, "Greek": 2, "Bengali": 2},
    "images_evaluation": {"Tengwar": 2, "Oriya": 1},
}
DRAWINGS = 3
PER_CLASS = 2  # CIFAR fixture: images per class in each of the train and test files


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("tests must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def _write_omniglot(root):
    """``omniglot-py/images_*/<alphabet>/character<k>/<id>_<drawer>.png``: 105x105 black strokes on white."""
    rng = np.random.default_rng(0)
    for part, alphabets in OMNIGLOT_ALPHABETS.items():
        for alphabet, characters in alphabets.items():
            for k in range(1, characters + 1):
                folder = root / "omniglot-py" / part / alphabet / f"character{k:02d}"
                folder.mkdir(parents=True)
                for drawer in range(1, DRAWINGS + 1):
                    ink = np.ones((105, 105), dtype=bool)
                    top, left = rng.integers(10, 60, size=2)
                    ink[top : top + 30, left : left + 8] = False  # a black stroke
                    Image.fromarray(ink).save(folder / f"{k:04d}_{drawer:02d}.png")


def _all_cifar_classes():
    fine = sorted(c for classes in CIFAR100_SUPERCLASSES.values() for c in classes)
    coarse = sorted(CIFAR100_SUPERCLASSES)
    coarse_of = {c: coarse.index(s) for s, classes in CIFAR100_SUPERCLASSES.items() for c in classes}
    return fine, coarse, [coarse_of[name] for name in fine]


def _write_cifar100(root):
    """``cifar-100-python/{train,test,meta}`` pickles with the keys of the official files."""
    fine, coarse, coarse_of = _all_cifar_classes()
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("train", "test"):
        labels = [c for c in range(100) for _ in range(PER_CLASS)]
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        data[:, 0] = np.array(labels)  # the first red pixel encodes the class, to check the layout
        entry = {"data": data, "fine_labels": labels, "coarse_labels": [coarse_of[c] for c in labels],
                 "filenames": [f"{name}_{i}.png" for i in range(len(labels))], "batch_label": name}
        with open(folder / name, "wb") as file:
            pickle.dump(entry, file)
    with open(folder / "meta", "wb") as file:
        pickle.dump({"fine_label_names": fine, "coarse_label_names": coarse}, file)


def _jpeg(path, value, size=(100, 90)):
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)


def _write_mini_imagenet_folders(root, per_class=3):
    """``{train,val,test}/<wnid>/*.jpg``: 3/2/2 classes."""
    for part, count in (("train", 3), ("val", 2), ("test", 2)):
        for k in range(count):
            folder = root / part / f"n0{part[:2]}{k:05d}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                _jpeg(folder / f"{folder.name}_{i:04d}.jpg", 40 * k)


def _write_mini_imagenet_csv(root):
    """Ravi & Larochelle's layout: ``images/*.jpg`` and ``{train,val,test}.csv`` (filename,label)."""
    (root / "images").mkdir(parents=True)
    for part, count in (("train", 2), ("val", 1), ("test", 1)):
        with open(root / f"{part}.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["filename", "label"])
            for k in range(count):
                wnid = f"n9{part[:2]}{k:05d}"
                for i in range(2):
                    name = f"{wnid}{i:08d}.jpg"
                    _jpeg(root / "images" / name, 100, size=(500, 375))
                    writer.writerow([name, wnid])


# ---------------------------------------------------------------------------
# Omniglot
# ---------------------------------------------------------------------------


def test_omniglot_shapes_groups_and_split(tmp_path):
    _write_omniglot(tmp_path)
    data, split = load_omniglot(tmp_path, val_alphabets=1)
    classes = sum(sum(a.values()) for a in OMNIGLOT_ALPHABETS.values())
    assert data.X.shape == (classes * DRAWINGS, 1, 28, 28)
    assert 0 <= float(data.X.min()) and float(data.X.max()) <= 1
    assert float(data.X.mean()) < 0.5, "strokes are white on black"
    assert [len(rows) for rows in data.indices_by_class()] == [DRAWINGS] * classes
    assert data.class_names[0] == "Bengali/character01" and data.class_groups[0] == "Bengali"
    test_alphabets = {data.class_groups[c] for c in split.test}
    assert test_alphabets == set(OMNIGLOT_ALPHABETS["images_evaluation"])
    assert len({data.class_groups[c] for c in split.val}) == 1
    assert not {data.class_groups[c] for c in split.val} & {data.class_groups[c] for c in split.train}
    assert sorted(split.train + split.val + split.test) == list(range(classes))


def test_omniglot_options(tmp_path):
    _write_omniglot(tmp_path)
    data, split = load_omniglot(tmp_path, image_size=14, max_per_class=2, val_alphabets=0)
    assert data.X.shape[1:] == (1, 14, 14) and len(data) == 2 * data.num_classes
    assert split.val == []
    with pytest.raises(ValueError, match="val_alphabets"):
        load_omniglot(tmp_path, val_alphabets=3)
    with pytest.raises(ValueError, match="image_size"):
        load_omniglot(tmp_path, image_size=4)


def test_omniglot_missing_says_what_and_where(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_omniglot(tmp_path)
    message = str(info.value)
    assert "images_background.zip" in message and "images_evaluation.zip" in message
    assert "https://raw.githubusercontent.com/brendenlake/omniglot" in message
    assert str(tmp_path / "omniglot-py") in message
    assert isinstance(info.value, FileNotFoundError)


def test_failed_download_says_what_and_where(tmp_path, monkeypatch):
    pytest.importorskip("torchvision")  # the downloads are torchvision's (an optional dependency)
    import torchvision.datasets.utils as tv_utils

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no internet")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    with pytest.raises(DatasetNotFoundError, match="downloading .*images_background.zip failed") as info:
        load_omniglot(tmp_path, download=True)
    assert str(tmp_path / "omniglot-py") in str(info.value)
    with pytest.raises(DatasetNotFoundError, match="cifar-100-python.tar.gz failed"):
        load_cifar_fs(tmp_path, download=True)


def test_default_folder_is_the_course_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MTL_COURSE_DATA", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match=re.escape(str(tmp_path / "omniglot"))):
        load_omniglot()
    with pytest.raises(DatasetNotFoundError, match=re.escape(str(tmp_path / "cifar100"))):
        load_fc100()


# ---------------------------------------------------------------------------
# CIFAR-FS and FC100
# ---------------------------------------------------------------------------


def test_split_constants_are_the_published_sizes():
    fine = {c for classes in CIFAR100_SUPERCLASSES.values() for c in classes}
    assert len(fine) == 100 and len(CIFAR100_SUPERCLASSES) == 20
    sizes = [len(CIFAR_FS_SPLIT[p]) for p in ("train", "val", "test")]
    assert sizes == [64, 16, 20] and set().union(*CIFAR_FS_SPLIT.values()) == fine
    assert [len(FC100_SPLIT[p]) for p in ("train", "val", "test")] == [12, 4, 4]
    assert set().union(*FC100_SPLIT.values()) == set(CIFAR100_SUPERCLASSES)


def test_cifar_fs_from_the_pickles(tmp_path):
    _write_cifar100(tmp_path)
    data, split = load_cifar_fs(tmp_path)
    assert data.X.shape == (100 * 2 * PER_CLASS, 3, 32, 32)
    assert data.num_classes == 100
    assert data.class_names[0] == "apple" and data.class_groups[0] == "fruit_and_vegetables"
    red = (data.X[:, 0, 0, 0] * 255).round().long()
    assert torch.equal(red, data.y), "pixels keep CIFAR's channel-first layout"
    assert [len(p) for p in (split.train, split.val, split.test)] == [64, 16, 20]
    assert {data.class_names[c] for c in split.test} == set(CIFAR_FS_SPLIT["test"])
    episode = EpisodeSampler(data, split.test, n_way=5, k_shot=1, q_queries=1, seed=0).sample()
    assert episode.support_X.shape == (5, 3, 32, 32)


def test_fc100_splits_by_superclass(tmp_path):
    _write_cifar100(tmp_path)
    data, split = load_fc100(tmp_path, max_per_class=1, image_size=16)
    assert data.X.shape == (100, 3, 16, 16)
    assert [len(p) for p in (split.train, split.val, split.test)] == [60, 20, 20]
    for part in ("train", "val", "test"):
        assert {data.class_groups[c] for c in getattr(split, part)} == set(FC100_SPLIT[part])


def test_cifar_missing_says_what_and_where(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_fc100(tmp_path)
    message = str(info.value)
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in message
    assert str(tmp_path / "cifar-100-python") in message


def test_cifar_with_foreign_class_names_is_refused(tmp_path):
    _write_cifar100(tmp_path)
    meta = tmp_path / "cifar-100-python" / "meta"
    names = pickle.loads(meta.read_bytes())
    names["fine_label_names"] = [f"class{i}" for i in range(100)]
    meta.write_bytes(pickle.dumps(names))
    with pytest.raises(ValueError, match="official files"):
        load_cifar_fs(tmp_path)


# ---------------------------------------------------------------------------
# miniImageNet
# ---------------------------------------------------------------------------


def test_mini_imagenet_from_class_folders(tmp_path):
    _write_mini_imagenet_folders(tmp_path)
    data, split = load_mini_imagenet(tmp_path)
    assert data.X.shape == (7 * 3, 3, 84, 84) and data.class_groups is None
    assert split.train == [0, 1, 2] and split.val == [3, 4] and split.test == [5, 6]
    assert data.class_names[3] == "n0va00000"
    assert abs(float(data.X[data.y == 1].mean()) - 40 / 255) < 0.02, "images keep their colour"


def test_mini_imagenet_from_ravi_larochelle_csvs(tmp_path):
    _write_mini_imagenet_csv(tmp_path)
    data, split = load_mini_imagenet(tmp_path, image_size=32, max_per_class=1)
    assert data.X.shape == (4, 3, 32, 32)
    assert [len(p) for p in (split.train, split.val, split.test)] == [2, 1, 1]
    assert data.class_names == ["n9tr00000", "n9tr00001", "n9va00000", "n9te00000"]


def test_mini_imagenet_missing_explains_layouts(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_mini_imagenet(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "train") in message and "train.csv" in message and "ImageNet" in message
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    (tmp_path / "test").mkdir()
    with pytest.raises(DatasetNotFoundError, match="hold no classes"):
        load_mini_imagenet(tmp_path)


def test_module_never_downloads_without_being_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmarks, "_download", lambda *args: pytest.fail("download=False must not download"))
    for loader in (load_omniglot, load_cifar_fs, load_fc100):
        with pytest.raises(DatasetNotFoundError):
            loader(tmp_path)
