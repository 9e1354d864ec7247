"""Tests of the Glyphs data set (rendered offline from matplotlib's fonts)."""
from __future__ import annotations

import unicodedata

import numpy as np
import pytest
import torch

from mtl_course.data import glyphs
from mtl_course.data.episodes import EpisodeSampler, split_classes
from mtl_course.data.glyphs import glyph_alphabets, glyph_faces, glyph_stats, load_glyphs, render_glyph

SMALL = dict(alphabets=("Greek", "Armenian", "Hebrew", "Braille", "Lao"), max_per_alphabet=6)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    return tmp_path_factory.mktemp("glyphs")


@pytest.fixture(scope="module")
def small(small_root):
    return load_glyphs(root=small_root, **SMALL)


def test_shape_range_and_ink(small):
    assert small.X.shape == (5 * 6 * 20, 1, 28, 28)
    assert small.X.dtype == torch.float32
    assert 0 <= float(small.X.min()) and float(small.X.max()) <= 1
    assert (small.X.flatten(1).sum(dim=1) > 0).all(), "every drawing shows some ink"
    assert float(small.X[:, :, 0, :].mean()) < 0.05, "white glyph on a black background"


def test_every_class_has_its_drawings_in_order(small):
    counts = [len(rows) for rows in small.indices_by_class()]
    assert counts == [20] * small.num_classes
    assert torch.equal(small.y, torch.arange(small.num_classes).repeat_interleave(20))


def test_names_and_alphabets(small):
    assert small.groups == list(SMALL["alphabets"])
    assert small.class_groups.count("Greek") == 6
    for name in small.class_names:
        char = name[0]
        assert name == f"{char} {unicodedata.name(char)}"
    assert len(set(small.class_names)) == small.num_classes


def test_same_seed_same_images_other_seed_differs(tmp_path, small):
    again = load_glyphs(root=tmp_path / "again", **SMALL)
    assert torch.equal(again.X, small.X)
    other = load_glyphs(seed=1, root=tmp_path / "other", **SMALL)
    assert not torch.equal(other.X, small.X)


def test_subset_reproduces_the_larger_set(tmp_path, small):
    fewer = load_glyphs(root=tmp_path, alphabets=("Braille", "Greek"), max_per_alphabet=2, drawings=5)
    for c, name in enumerate(fewer.class_names):
        big = small.class_names.index(name)
        assert torch.equal(fewer.X[fewer.y == c], small.X[small.y == big][:5])


def test_cache_round_trip(small_root, small, monkeypatch):
    files = sorted(p.name for p in small_root.iterdir())
    assert len(files) == 1 and files[0].startswith("glyphs-v") and "seed0-28px-20drawings" in files[0]
    monkeypatch.setattr(glyphs, "_render", lambda *args: pytest.fail("the cache should have been read"))
    cached = load_glyphs(root=small_root, **SMALL)
    assert torch.equal(cached.X, small.X) and torch.equal(cached.y, small.y)
    assert cached.class_names == small.class_names and cached.class_groups == small.class_groups


def test_cache_is_uint8_npz_with_metadata(small_root):
    path = next(small_root.iterdir())
    with np.load(path) as data:
        assert data["images"].dtype == np.uint8
        assert set(data.files) >= {"images", "labels", "characters", "alphabets", "faces", "drawing_faces"}
        assert len(data["drawing_faces"]) == len(data["images"])


def test_unreadable_cache_is_rendered_again(tmp_path):
    first = load_glyphs(root=tmp_path, alphabets=["Greek"], max_per_alphabet=2, drawings=2)
    path = next(tmp_path.iterdir())
    path.write_bytes(b"not a zip file")
    second = load_glyphs(root=tmp_path, alphabets=["Greek"], max_per_alphabet=2, drawings=2)
    assert torch.equal(first.X, second.X)
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no temporary files are left behind"


def test_other_image_size(tmp_path):
    data = load_glyphs(image_size=16, drawings=3, root=tmp_path, alphabets=["Hebrew"], max_per_alphabet=4)
    assert data.X.shape == (12, 1, 16, 16)


def test_drawings_cycle_through_faces(small_root):
    path = next(small_root.iterdir())
    with np.load(path) as data:
        faces = data["drawing_faces"].reshape(-1, 20)
    for row in faces.tolist():
        n = len(set(row))
        assert n >= glyphs.MIN_FACES
        assert row == [row[i % n] for i in range(20)], "drawing i uses face i mod (number of faces)"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_size=7), "image_size must be an integer >= 8"),
        (dict(drawings=0), "drawings must be an integer >= 1"),
        (dict(seed=-1), "seed must be an integer >= 0"),
        (dict(max_per_alphabet=0), "max_per_alphabet must be an integer >= 1"),
        (dict(alphabets=["Klingon"]), "unknown alphabet"),
    ],
)
def test_bad_arguments_are_explained(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_glyphs(root=tmp_path, **kwargs)


def test_split_by_alphabet_keeps_alphabets_disjoint(small):
    split = split_classes(small, by="group", seed=0)
    alphabets = [{small.class_groups[c] for c in part} for part in (split.train, split.val, split.test)]
    assert all(alphabets)
    assert not (alphabets[0] & alphabets[1] or alphabets[0] & alphabets[2] or alphabets[1] & alphabets[2])


def test_episode_sampler_over_glyphs(small):
    split = split_classes(small, by="group", seed=0)
    episode = EpisodeSampler(small, split.train, n_way=5, k_shot=1, q_queries=15, seed=0).sample()
    assert episode.support_X.shape == (5, 1, 28, 28)
    assert episode.query_X.shape == (75, 1, 28, 28)
    assert set(episode.classes) <= set(split.train)


def test_render_glyph_is_clean_and_checked():
    regular, bold = render_glyph("A", "DejaVu Sans"), render_glyph("A", "DejaVu Sans Bold")
    assert regular.shape == (28, 28) and 0 <= float(regular.min()) and float(regular.max()) <= 1
    assert float(bold.sum()) > float(regular.sum()), "a bold face has more ink"
    assert render_glyph("ж", size=64).shape == (64, 64)
    with pytest.raises(ValueError, match="unknown face"):
        render_glyph("A", "Comic Sans")
    with pytest.raises(ValueError, match="has no glyph"):
        render_glyph("\ue000")
    with pytest.raises(ValueError, match="single character"):
        render_glyph("AB")


def test_lookalikes_dropped_positions_kept():
    alphabets = glyph_alphabets()
    assert "A" in alphabets["Latin"] and "\u0391" not in alphabets["Greek"], "Greek Alpha looks like Latin A"
    assert len(alphabets["Braille"]) == 63, "Braille cells differ only by dot position, which must be kept"
    assert len(glyph_faces()) >= glyphs.MIN_FACES and "DejaVu Sans" in glyph_faces()


def test_full_set_counts():
    """The whole set (read from the default cache; rendered and cached there on first use)."""
    stats = glyph_stats()
    assert len(stats.alphabets) >= 10
    assert stats.characters >= 1500
    assert stats.images == 20 * stats.characters
    data = load_glyphs()
    assert [len(rows) for rows in data.indices_by_class()] == [20] * data.num_classes
    assert len(set(data.class_names)) == data.num_classes == stats.characters
    assert all(len(glyphs._faces_with_glyph(name[0])) >= glyphs.MIN_FACES for name in data.class_names)
