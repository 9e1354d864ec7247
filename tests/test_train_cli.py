"""`python -m mtl_course.train`: resumable training loops, profiles, and the command end to end.

A run is stopped the way a killed process stops, by an exception in the middle
of training (a loss function that raises on its n-th call), then started again
with the same checkpoint after torch's global generator was moved elsewhere: it
must end with exactly the parameters and history of a run that was never
stopped, which holds only if the model, optimizer, epoch and step, history,
best state and every random generator come back.
"""
from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtl_course import m3tl, meta, models, runtime, store, training
from mtl_course import train as train_cli
from mtl_course.data import Episode
from mtl_course.data.multimodal import MultiModalSet, TaskEpisodes
from mtl_course.data.sinusoid import SinusoidTasks


class StopAt:
    """A loss function that raises on its ``call``-th call, as a killed run would stop (``None``: never)."""

    def __init__(self, call: int | None = None, loss=F.cross_entropy) -> None:
        self.call, self.calls, self.loss = call, 0, loss

    def __call__(self, out, y):
        self.calls += 1
        if self.call is not None and self.calls == self.call:
            raise KeyboardInterrupt("stopped")
        return self.loss(out, y)


def blobs(n: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    return torch.randn(n, 2, generator=g) * 0.5 + torch.tensor([[0.0, 0], [2, 0], [0, 2]])[y], y


def dropout_net(seed: int = 1) -> nn.Module:
    """A network whose dropout draws from torch's global generator in every training step."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))


def fit_run(checkpoint=None, stop: StopAt | None = None, global_seed: int = 0, **kwargs):
    model = dropout_net()
    torch.manual_seed(global_seed)  # where the global generator stands when training starts
    settings = {"num_epochs": 4, "batch_size": 8, "lr": 0.05, "seed": 3, **kwargs}
    history = training.fit(model, blobs(), blobs(24, seed=1), loss_fn=stop or StopAt(), checkpoint=checkpoint,
                           **settings)
    return model, history


def assert_same_run(a: nn.Module, b: nn.Module) -> None:
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), f"{name} differs after resuming"


# --- training.fit ---------------------------------------------------------------


@pytest.mark.parametrize("stop_call", [4, 15])  # in the first epoch; in the third, after a validation
def test_a_stopped_fit_resumes_where_it_stopped(tmp_path, stop_call):
    whole, whole_history = fit_run()
    with pytest.raises(KeyboardInterrupt):
        fit_run(runtime.Checkpoint(tmp_path / "run.pt", every=0), StopAt(stop_call))
    assert (tmp_path / "run.pt").is_file()
    resumed, history = fit_run(runtime.Checkpoint(tmp_path / "run.pt", every=0), global_seed=1234)
    assert_same_run(whole, resumed)
    assert history == whole_history and len(history.step_loss) == 4 * 6 and history.best_epoch is not None
    assert not (tmp_path / "run.pt").exists(), "a finished run removes its checkpoint"


def test_a_held_checkpoint_keeps_a_finished_fit_and_skips_it(tmp_path):
    path = tmp_path / "run.pt"
    whole, whole_history = fit_run(runtime.Checkpoint(path, every=1e9, hold=True), patience=1)
    assert path.is_file(), "a held checkpoint keeps the finished loop's state"
    never = StopAt(1)  # any training or validation step would raise
    again, history = fit_run(runtime.Checkpoint(path, every=1e9, hold=True), never, global_seed=99, patience=1)
    assert never.calls == 0 and history == whole_history
    assert_same_run(whole, again)


def test_a_held_finished_fit_restores_the_generators_of_its_end(tmp_path):
    path = tmp_path / "run.pt"
    fit_run(runtime.Checkpoint(path, every=1e9, hold=True))
    after_training = torch.rand(3)
    fit_run(runtime.Checkpoint(path, every=1e9, hold=True), StopAt(1), global_seed=7)
    assert torch.equal(torch.rand(3), after_training), "what follows training draws the same numbers"


@pytest.mark.parametrize("limits", [{"max_steps": 10, "num_epochs": 3}, {"patience": 2, "num_epochs": 8}])
def test_max_steps_and_early_stopping_resume_too(tmp_path, limits):
    whole, whole_history = fit_run(**limits)
    assert len(whole_history.step_loss) == 10 or whole_history.stopped_early
    with pytest.raises(KeyboardInterrupt):
        fit_run(runtime.Checkpoint(tmp_path / "run.pt", every=0), StopAt(9), **limits)
    resumed, history = fit_run(runtime.Checkpoint(tmp_path / "run.pt", every=0), **limits)
    assert_same_run(whole, resumed)
    assert history == whole_history


def test_a_checkpoint_of_another_fit_is_refused(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        fit_run(runtime.Checkpoint(tmp_path / "run.pt", every=0), StopAt(5))
    with pytest.raises(ValueError, match=r"belongs to another run \(it differs in num_epochs, seed\).*delete it"):
        fit_run(runtime.Checkpoint(tmp_path / "run.pt"), num_epochs=5, seed=4)


# --- meta.meta_train with learned inner rates ------------------------------------------


def meta_sgd_run(checkpoint=None, stop_at: int | None = None, global_seed: int = 0):
    """Meta-SGD on sinusoids: the learned rates live outside the model, so only the checkpoint brings them back."""
    torch.manual_seed(1)
    net = models.MLP(1, (8,), 1)
    rates = meta.init_per_param_lr(models.params_of(net), 0.01)
    tasks, calls = SinusoidTasks(seed=3), {"n": 0}

    def sample():
        calls["n"] += 1
        if calls["n"] == stop_at:
            raise KeyboardInterrupt("stopped")
        return tasks.batch(2, 5, 5)

    torch.manual_seed(global_seed)
    history = meta.meta_train(net, sample, method="metasgd", outer_steps=6,
                              inner=meta.InnerLoop(lr=0.01, per_param_lr=rates),
                              loss_fn=F.mse_loss, metric=None, checkpoint=checkpoint)
    return net, rates, history


def test_a_stopped_meta_sgd_run_resumes_with_its_learned_rates(tmp_path):
    whole, whole_rates, whole_history = meta_sgd_run()
    with pytest.raises(KeyboardInterrupt):
        meta_sgd_run(runtime.Checkpoint(tmp_path / "run.pt", every=0), stop_at=4)
    resumed, rates, history = meta_sgd_run(runtime.Checkpoint(tmp_path / "run.pt", every=0), global_seed=5)
    assert_same_run(whole, resumed)
    assert all(torch.equal(whole_rates[k], rates[k]) for k in rates) and history == whole_history


# --- the M3TL loop ----------------------------------------------------------------


def m3tl_run(checkpoint=None, stop_at: int | None = None, global_seed: int = 0):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(4).repeat_interleave(6)
    image = torch.rand(4, 1, 8, 8, generator=g)[y] + 0.1 * torch.randn(24, 1, 8, 8, generator=g)
    data = MultiModalSet({"image": image}, {"character": y}, {"character": "classification"}, y, y % 2,
                         torch.arange(6).repeat(4), [f"c{i}" for i in range(4)], ["a0", "a1"])
    config = m3tl.M3TLConfig(data.modality_shapes, {"image": m3tl.EncoderSpec(hidden=(8,))},
                             [m3tl.task("character", "classification", 3)], embed_dim=8, backbone_sizes=(8,))
    net = m3tl.build(config, seed=1)
    sampler = TaskEpisodes(data, "character", n_way=3, k_shot=1, q_queries=2, seed=2)
    calls = {"n": 0}

    def sample():
        calls["n"] += 1
        if calls["n"] == stop_at:
            raise KeyboardInterrupt("stopped")
        return [Episode(e.support_X, e.support_y, e.query_X + 0.1 * torch.randn_like(e.query_X), e.query_y,
                        e.classes) for e in sampler.batch(2)]  # noise from torch's global generator

    torch.manual_seed(global_seed)
    val = {"character": TaskEpisodes(data, "character", n_way=3, k_shot=1, q_queries=2, seed=5).episodes(3)}
    history = m3tl.meta_train(net, {"character": sample}, outer_steps=6, meta_lr=1e-2, inner=meta.InnerLoop(lr=0.3),
                              val_episodes=val, eval_every=2, checkpoint=checkpoint)
    return net, history


def test_a_stopped_m3tl_meta_training_resumes_where_it_stopped(tmp_path):
    whole, whole_history = m3tl_run()
    with pytest.raises(KeyboardInterrupt):
        m3tl_run(runtime.Checkpoint(tmp_path / "m3tl.pt", every=0), stop_at=5)
    resumed, history = m3tl_run(runtime.Checkpoint(tmp_path / "m3tl.pt", every=0), global_seed=77)
    assert_same_run(whole, resumed)
    assert history == whole_history and len(history.loss) == 6
    assert not (tmp_path / "m3tl.pt").exists()


# --- the command, on a throwaway recipe --------------------------------------------

STOP = StopAt()  # the throwaway recipe's loss; a test sets STOP.call to stop a run


def _train_tiny(config, seed, max_steps=None, device=None, checkpoint=None):
    model = dropout_net(seed)
    runtime.seed_everything(seed)
    history = training.fit(model, blobs(), blobs(24, seed=1), num_epochs=config["num_epochs"], batch_size=8,
                           lr=0.05, seed=seed, loss_fn=STOP, max_steps=max_steps, checkpoint=checkpoint)
    return store.Trained(model, {"val_acc": history.best_val_metric}, history.step_loss,
                         {"epoch_train_loss": history.train_loss})


def _build_tiny(config):
    return dropout_net()


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """A registered throwaway recipe ``tiny-cli`` (no full profile) and ``tiny-cli-full`` (with one)."""
    monkeypatch.delenv(runtime.SEED_OFFSET_VARIABLE, raising=False)
    monkeypatch.setattr(STOP, "call", None)
    monkeypatch.setattr(STOP, "calls", 0)
    for name, full in (("tiny-cli", None), ("tiny-cli-full", {"num_epochs": 3})):
        monkeypatch.setitem(store.RECIPES, name, store.Recipe(name, 0, _train_tiny, _build_tiny, {"num_epochs": 2},
                                                              full_config=full))
    return tmp_path


def cli(tmp_path, *args: str) -> int:
    return train_cli.main([*args, "--out", str(tmp_path / "store"), "--checkpoint-dir", str(tmp_path / "ck"),
                           "--every", "0"])


def test_the_command_writes_the_same_entry_as_the_store(tiny):
    assert cli(tiny, "tiny-cli", "--profile", "quick") == 0
    by_command = store.read_manifest(tiny / "store")["tiny-cli"]
    by_store = store.train("tiny-cli", tiny / "direct", torch.device("cpu"))
    assert set(by_command) == set(by_store) and by_command["profile"] == "quick"
    for key in ("config", "seed", "code_version", "recipe", "metrics", "curve", "extra", "sha256"):
        assert by_command[key] == by_store[key], key
    assert store.load("tiny-cli", "cpu", tiny / "store").entry == by_command
    assert not any((tiny / "ck").iterdir()), "a finished recipe removes its checkpoint"


def test_an_interrupted_command_continues_where_it_stopped(tiny):
    cli(tiny / "whole", "tiny-cli", "--profile", "quick")
    whole = store.read_manifest(tiny / "whole" / "store")["tiny-cli"]
    STOP.call, STOP.calls = 9, 0  # in the second epoch
    with pytest.raises(KeyboardInterrupt):
        cli(tiny, "tiny-cli", "--profile", "quick")
    assert (tiny / "ck" / "tiny-cli-quick.pt").is_file()
    STOP.call = None
    torch.manual_seed(4321)
    cli(tiny, "tiny-cli", "--profile", "quick")
    resumed = store.read_manifest(tiny / "store")["tiny-cli"]
    assert resumed["sha256"] == whole["sha256"] and resumed["curve"] == whole["curve"]
    assert not (tiny / "ck" / "tiny-cli-quick.pt").exists()


def test_the_checkpoint_of_another_config_is_refused(tiny, monkeypatch):
    STOP.call = 5
    with pytest.raises(KeyboardInterrupt):
        cli(tiny, "tiny-cli", "--profile", "quick")
    STOP.call = None
    changed = store.Recipe("tiny-cli", 0, _train_tiny, _build_tiny, {"num_epochs": 3})
    monkeypatch.setitem(store.RECIPES, "tiny-cli", changed)
    with pytest.raises(ValueError, match=r"tiny-cli-quick.pt belongs to another run.*config.*delete it"):
        cli(tiny, "tiny-cli", "--profile", "quick")
    assert cli(tiny, "tiny-cli", "--profile", "quick", "--fresh") == 0


def test_unknown_recipes_fail_before_anything_trains(tiny, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli(tiny, "tiny-cli", "no-such-recipe", "--profile", "quick")
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "no recipe named 'no-such-recipe'" in error and "glyphs-maml-conv4" in error and "tiny-cli" in error
    assert STOP.calls == 0 and not (tiny / "store").exists()


def test_the_full_profile_of_a_recipe_without_one_is_refused(tiny, capsys):
    with pytest.raises(SystemExit):
        cli(tiny, "tiny-cli", "--profile", "full")
    error = capsys.readouterr().err
    assert "'tiny-cli' has no full profile" in error
    assert "tiny-cli-full" in error and "glyphs-maml-conv4" in error, "it names the recipes that have one"
    assert STOP.calls == 0


def test_the_full_profile_is_recorded_and_loads(tiny):
    cli(tiny, "tiny-cli-full", "--profile", "full")
    e = store.read_manifest(tiny / "store")["tiny-cli-full"]
    assert e["profile"] == "full" and e["config"] == {"num_epochs": 3} and e["curve"]["steps"] == 3 * 6
    assert store.load("tiny-cli-full", "cpu", tiny / "store").entry == e


def test_entries_without_a_profile_count_as_quick(tiny):
    cli(tiny, "tiny-cli", "--profile", "quick")
    entries = store.read_manifest(tiny / "store")
    del entries["tiny-cli"]["profile"]  # as every entry written before profiles existed
    store.write_manifest(entries, tiny / "store")
    assert store.load("tiny-cli", "cpu", tiny / "store").entry["config"] == {"num_epochs": 2}


def test_the_meta_learners_have_a_full_profile_with_the_papers_meta_batches():
    from mtl_course import few_shot

    for name, quick in few_shot.META_LEARNERS.items():
        recipe = store.recipe(few_shot.model_name(name))
        full = recipe.config_for("full")
        assert recipe.config == asdict(quick), "the quick config stays what the store was trained with"
        assert full["outer_steps"] > quick.outer_steps and full["method"] == quick.method
        assert {k: v for k, v in full.items() if k not in ("outer_steps", "meta_batch", "eval_every", "n_way")} \
            == {k: v for k, v in recipe.config.items() if k not in ("outer_steps", "meta_batch", "eval_every",
                                                                     "n_way")}


def test_every_registered_recipe_takes_a_checkpoint():
    not_resumable = [name for name, r in store.recipes().items() if not r.resumable]
    assert not not_resumable, f"these recipes cannot resume a stopped run: {not_resumable}"


def test_jobs_reach_the_store_and_a_recipe_of_one_run_trains_alone(tiny, monkeypatch):
    asked = []
    real = store.train
    monkeypatch.setattr(store, "train", lambda *a, **k: asked.append(k["jobs"]) or real(*a, **k))
    assert cli(tiny, "tiny-cli", "--profile", "quick", "--jobs", "2") == 0
    assert asked == [2]  # tiny-cli takes no `reverse`: no second process, the same entry
    by_two = store.read_manifest(tiny / "store")["tiny-cli"]
    by_one = real("tiny-cli", tiny / "direct", torch.device("cpu"))
    assert by_two["sha256"] == by_one["sha256"]
    with pytest.raises(SystemExit):
        cli(tiny, "tiny-cli", "--jobs", "3")
