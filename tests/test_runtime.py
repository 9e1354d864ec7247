import pytest
import torch

from mtl_course import runtime


def test_default_device_is_cpu_without_accelerators():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert runtime.get_device().type in ("cpu", "mps")


def test_asking_for_missing_cuda_says_what_to_do(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA is not available.*get_device\\(\\)"):
        runtime.get_device("cuda")


def test_asking_for_a_cuda_index_that_does_not_exist(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert runtime.get_device("cuda:0").type == "cuda"
    with pytest.raises(RuntimeError, match="only 1 CUDA"):
        runtime.get_device("cuda:3")


def test_device_preference_order(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.get_device().type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "_mps_available", lambda: True)
    assert runtime.get_device().type == "mps"


def test_profile_is_quick_on_every_device_unless_asked_for_full(monkeypatch):
    monkeypatch.delenv("MTL_COURSE_PROFILE", raising=False)
    monkeypatch.setattr(runtime, "get_device", lambda: torch.device("cuda"))
    assert runtime.get_profile() == "quick", "a GPU alone must not start hours of training"
    assert runtime.describe().splitlines()[2] == "%env MTL_COURSE_PROFILE=full", "how to switch, on its own line"
    monkeypatch.setenv("MTL_COURSE_PROFILE", "FULL")
    assert runtime.get_profile() == "full"
    assert runtime.by_profile(quick=1, full=2) == 2
    _, second, third = runtime.describe().splitlines()
    assert "hours" in second and third == "%env MTL_COURSE_PROFILE=quick"
    assert max(len(line) for line in runtime.describe().splitlines()) <= 88, "the setup cell's output fits the page"
    monkeypatch.setenv("MTL_COURSE_PROFILE", "fast")
    with pytest.raises(ValueError, match="'quick' or 'full'"):
        runtime.get_profile()


def test_by_profile_rejects_unknown_profile():
    with pytest.raises(ValueError, match="profile must be one of"):
        runtime.by_profile(1, 2, profile="medium")


def test_seed_everything_repeats_random_draws():
    runtime.seed_everything(3)
    a = torch.randn(5)
    runtime.seed_everything(3)
    assert torch.equal(a, torch.randn(5))
    with pytest.raises(ValueError):
        runtime.seed_everything(-1)


def test_deterministic_mode_is_switched_on_and_off():
    try:
        runtime.seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_progress_respects_tqdm_disable(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert runtime.progress(range(3)).disable
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert not runtime.progress(range(3)).disable
    assert list(runtime.progress(range(3))) == [0, 1, 2]


def test_data_dir_uses_env_and_creates_subdirs(monkeypatch, tmp_path):
    monkeypatch.setenv("MTL_COURSE_DATA", str(tmp_path / "store"))
    path = runtime.data_dir("glyphs")
    assert path == tmp_path / "store" / "glyphs" and path.is_dir()
