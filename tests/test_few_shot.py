"""Chapter 4's few-shot helpers: wider heads, scoring shortcuts, Meta-SGD's stored rates, the full-profile path."""
import pytest
import torch
from torch import nn

from mtl_course import few_shot, meta, models, runtime, store
from mtl_course.data import ClassSplit, LabelledSet


def tiny_images(num_classes: int = 12, per_class: int = 8, size: int = 16, seed: int = 0) -> LabelledSet:
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(num_classes, 1, size, size, generator=generator)
    X = prototypes.repeat_interleave(per_class, 0) + 0.1 * torch.randn(num_classes * per_class, 1, size, size,
                                                                          generator=generator)
    y = torch.arange(num_classes).repeat_interleave(per_class)
    return LabelledSet(X, y, [str(c) for c in range(num_classes)])


def trained_head_net(n_way: int = 5) -> nn.Module:
    runtime.seed_everything(0)
    return models.Conv4(1, 8, n_way, image_size=16)


def test_widen_head_copies_the_average_row_to_every_output():
    net = trained_head_net()
    wide = few_shot.widen_head(net, 20)
    assert wide.head.out_features == 20 and net.head.out_features == 5, "the original is left as it was"
    assert torch.allclose(wide.head.weight, net.head.weight.mean(0).expand(20, -1))
    assert torch.allclose(wide.head.bias, net.head.bias.mean().expand(20))
    assert few_shot.widen_head(net, 5).head.weight.equal(net.head.weight), "the same width is an unchanged copy"


def test_widen_head_of_a_zero_head_predicts_uniformly_like_a_fresh_zero_head():
    net = meta.zero_head_(trained_head_net())
    x = torch.rand(3, 1, 16, 16)
    probabilities = few_shot.widen_head(net, 20)(x).softmax(-1)
    assert torch.allclose(probabilities, torch.full((3, 20), 1 / 20))


def test_meta_sgd_learner_widens_its_rates_and_round_trips_through_the_store_builder():
    config = {**few_shot.asdict(few_shot.MetaLearnerConfig("metasgd", hidden=8)), "inner_lr": 0.3}
    learner = few_shot.build_meta_learner(config, image_size=16)
    with torch.no_grad():
        learner.rates["head__weight"][0] += 1.0
    rates = learner.per_param_lr()
    assert set(rates) == {k for k, _ in learner.net.named_parameters()}
    wide = few_shot.widen_head(learner, 20)
    assert wide.per_param_lr()["head.weight"].shape == (20, learner.net.head.in_features)
    assert torch.allclose(wide.per_param_lr()["head.weight"][0], rates["head.weight"].mean(0))
    copy = few_shot.build_meta_learner(config, image_size=16)
    copy.load_state_dict(learner.state_dict())
    assert copy.per_param_lr()["head.weight"].equal(rates["head.weight"])


def test_anil_score_on_features_equals_adapting_the_head_of_the_whole_network():
    data = tiny_images()
    net = trained_head_net()
    shortcut = few_shot.score(net, "anil", data, 5, 1, num=6, q_queries=3, inner_lr=0.5, inner_steps=2)
    direct = meta.evaluate_episodes(net, few_shot.episodes(data, 5, 1, 6, few_shot.TEST_SEED, q_queries=3),
                                    method="anil", inner=meta.InnerLoop(lr=0.5, steps=2))
    assert shortcut.values == pytest.approx(direct.values)


def test_protonet_score_equals_prototypes_of_the_network():
    data = tiny_images()
    runtime.seed_everything(0)
    net = models.Conv4(1, 8, None, image_size=16)
    shortcut = few_shot.score(net, "protonet", data, 4, 2, num=5, q_queries=3)
    direct = meta.evaluate_episodes(net, few_shot.episodes(data, 4, 2, 5, few_shot.TEST_SEED, q_queries=3),
                                    method="protonet")
    assert shortcut.values == pytest.approx(direct.values)


def test_maml_score_adapts_every_weight():
    data = tiny_images()
    net = meta.zero_head_(trained_head_net())
    none = few_shot.score(net, "maml", data, 5, 1, num=4, q_queries=3, inner_steps=0)
    assert none.mean == pytest.approx(0.2), "a zero head without adaptation predicts one class: chance"
    adapted = few_shot.score(net, "maml", data, 5, 1, num=4, q_queries=3, inner_lr=0.4, inner_steps=3)
    assert adapted.mean > none.mean, "adaptation on the support set must help on separable classes"


def test_train_meta_learner_keeps_the_best_validation_checkpoint_and_scores_every_setting(monkeypatch):
    monkeypatch.setattr(few_shot, "TEST_SETTINGS", ((5, 1),))
    monkeypatch.setattr(few_shot, "NUM_VAL", 4)
    monkeypatch.setattr(few_shot, "NUM_TEST", 4)
    monkeypatch.setattr(few_shot, "TEST_STEP_CHOICES", (1, 2))
    data = tiny_images(num_classes=18, per_class=16)
    split = ClassSplit(train=list(range(6)), val=list(range(6, 12)), test=list(range(12, 18)))
    config = few_shot.MetaLearnerConfig("maml", q_queries=2, meta_batch=2, outer_steps=4, hidden=8, eval_every=2)
    result = few_shot.train_meta_learner(config, data, split, device=torch.device("cpu"))
    assert len(result.step_losses) == 4
    assert result.extra["val_step"] == [2, 4] and result.extra["best_step"] in (2, 4)
    assert set(result.metrics) == {"test_acc_5w1s", "test_acc_5w1s_ci95", "val_acc_5w"}
    assert result.extra["test_steps"]["test_acc_5w1s"] in (1, 2)
    chosen = f'{result.extra["test_steps"]["test_acc_5w1s"]}@{result.extra["test_lr"]["test_acc_5w1s"]:g}'
    by_choice = result.extra["val_by_choice"]["test_acc_5w1s"]
    assert set(by_choice) == {"1@0.4", "2@0.4", "1@0.1", "2@0.1"}, "steps and step size are chosen together"
    assert by_choice[chosen] == max(by_choice.values()), "the choice is the best on validation"


def test_load_or_train_retrains_with_overrides_and_leaves_the_store_alone(monkeypatch, tmp_path):
    calls = []

    def train(config, seed, max_steps=None, device=None):
        calls.append(config)
        return store.Trained(nn.Linear(1, 1), {"score": 1.0}, [3.0, 2.0, 1.0], {"note": "x"})

    recipe = store.Recipe("tiny-retrain", 0, train, lambda config: nn.Linear(1, 1), {"steps": 3})
    monkeypatch.setitem(store.RECIPES, "tiny-retrain", recipe)
    fresh = store.load_or_train("tiny-retrain", "cpu", retrain=True, steps=30)
    assert calls == [{"steps": 30}]
    assert fresh.metrics == {"score": 1.0} and fresh.entry["curve"]["final_loss"] == 1.0
    assert "trained in this run" in fresh.describe()
    with pytest.raises(store.StoreError, match="make models"):
        store.load_or_train("tiny-retrain", "cpu")  # never trained into the store: loading says what to run


def test_test_time_choices_follow_each_methods_inner_loop():
    assert few_shot.test_time_choices("protonet", 0.4) == [(0, 0.4)], "class means have no steps to choose"
    metasgd = few_shot.test_time_choices("metasgd", 0.4)
    assert metasgd == few_shot.test_time_choices("maml", 0.4), "Meta-SGD's factors scale its learned rates"
    maml = few_shot.test_time_choices("maml", 0.4)
    assert maml[0] == (1, 0.4), "ties go to the meta-training step size and one step"
    assert {lr for _, lr in maml} == {0.4, 0.1} and len(maml) == 2 * len(few_shot.TEST_STEP_CHOICES)


def test_support_only_baselines_choose_their_adaptation_on_validation(monkeypatch):
    monkeypatch.setattr(few_shot, "NUM_VAL", 3)
    monkeypatch.setattr(few_shot, "NUM_TEST", 3)
    monkeypatch.setattr(few_shot, "TEST_STEP_CHOICES", (1, 2))
    monkeypatch.setattr(few_shot, "SUPPORT_ONLY_LRS", (0.01, 0.1))
    data = tiny_images(num_classes=10, per_class=16, size=28)
    body = models.Conv4(1, 64, None, image_size=28)
    metrics, extra = few_shot.support_only_baselines(body, data, data)
    assert set(metrics) == {"scratch_test_acc_5w1s", "scratch_test_acc_5w1s_ci95",
                            "finetune_test_acc_5w1s", "finetune_test_acc_5w1s_ci95"}
    for name in ("scratch", "finetune"):
        chosen = extra[f"{name}_test_acc_5w1s_adaptation"]
        assert set(chosen["val_by_choice"]) == {"1@0.01", "2@0.01", "1@0.1", "2@0.1"}
        assert chosen["val_by_choice"][f"{chosen['steps']}@{chosen['lr']:g}"] == max(chosen["val_by_choice"].values())
    finetune = few_shot.support_only_network(body)
    assert torch.equal(finetune.blocks[0][0].weight, body.blocks[0][0].weight), "fine-tuning starts from the body"
    assert not finetune.head.weight.any(), "a zero head: every episode starts at the uniform prediction"


def test_a_test_time_step_size_scales_meta_sgds_learned_rates():
    learner = few_shot.build_meta_learner({"method": "metasgd", "hidden": 8, "inner_lr": 0.4}, 1, 28)
    _, rates = few_shot.network_and_rates(learner)
    assert all(r is learner.rates[few_shot._safe(k)] for k, r in rates.items()), "meta-training gets the parameters"
    _, quarter = few_shot.network_and_rates(learner, inner_lr=0.1)
    assert all(torch.allclose(quarter[k], 0.25 * rates[k]) for k in rates)
