import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mtl_course import metrics, models, runtime, training


def test_mlp_shapes_and_parts():
    net = models.MLP(1, (40, 40), 1)
    assert net(torch.zeros(7, 1)).shape == (7, 1)
    assert models.count_parameters(net) == 1 * 40 + 40 + 40 * 40 + 40 + 40 + 1
    assert isinstance(net.head, nn.Linear) and net.feature_dim == 40
    with pytest.raises(ValueError, match="positive"):
        models.MLP(0, (4,), 1)


@pytest.mark.parametrize("norm", ["group", "layer", "batch", "none"])
def test_conv4_features(norm):
    net = models.Conv4(1, 64, out_features=5, norm=norm)
    assert net.feature_dim == 64
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 5)
    assert models.Conv4(3, 32, image_size=84).feature_dim == 32 * 5 * 5


def test_conv4_rejects_wrong_input():
    with pytest.raises(ValueError, match=r"expects images of shape \(batch, 1, H, W\)"):
        models.Conv4(1)(torch.zeros(3, 28, 28))
    with pytest.raises(ValueError, match="norm must be one of"):
        models.Conv4(1, norm="weird")


def test_functional_forward_matches_module_and_uses_given_params():
    torch.manual_seed(0)
    net = models.Conv4(1, 16, out_features=3)
    x = torch.randn(4, 1, 28, 28)
    params = models.params_of(net)
    assert torch.allclose(models.functional_forward(net, params, x), net(x))
    zero_head = {"head.weight": torch.zeros_like(net.head.weight), "head.bias": torch.ones(3)}
    assert torch.equal(models.functional_forward(net, zero_head, x), torch.ones(4, 3))
    assert torch.equal(net.head.bias, params["head.bias"])  # the module itself is untouched


def test_replace_head():
    net = models.replace_head(models.MLP(4, (8,), 3), 6)
    assert net(torch.zeros(2, 4)).shape == (2, 6)


def _blobs(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    X = torch.randn(n, 2, generator=g) * 0.3 + torch.tensor([[0, 0], [3, 0], [0, 3]])[y]
    return X, y


def test_fit_learns_and_records_history():
    runtime.seed_everything(0)
    net = models.MLP(2, (16,), 3)
    history = training.fit(net, _blobs(), _blobs(seed=1), num_epochs=15, lr=1e-2)
    assert len(history.train_loss) == len(history.val_metric) == 15
    assert history.train_loss[-1] < history.train_loss[0]
    assert training.evaluate(net, _blobs(seed=2))[1] > 0.95


def test_fit_restores_best_weights_and_stops_early():
    runtime.seed_everything(0)
    net = models.MLP(2, (16,), 3)
    # a validation set whose labels are rotated gets worse as training succeeds
    X, y = _blobs(seed=1)
    history = training.fit(net, _blobs(), (X, (y + 1) % 3), num_epochs=30, lr=1e-2, patience=3)
    assert history.stopped_early and len(history.val_metric) < 30
    restored = training.evaluate(net, (X, (y + 1) % 3))[1]
    assert restored == pytest.approx(max(history.val_metric))


def test_fit_keeps_frozen_parameters_frozen():
    runtime.seed_everything(0)
    net = models.MLP(2, (16,), 3)
    for p in net.body.parameters():
        p.requires_grad_(False)
    before = [p.clone() for p in net.body.parameters()]
    training.fit(net, _blobs(), num_epochs=3)
    assert all(torch.equal(a, b) for a, b in zip(before, net.body.parameters()))
    for p in net.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        training.fit(net, _blobs(), num_epochs=1)


def test_fit_is_reproducible():
    def run():
        runtime.seed_everything(0)
        net = models.MLP(2, (16,), 3)
        return training.fit(net, _blobs(), num_epochs=3).train_loss

    assert run() == run()


def test_fit_validates_input():
    net = models.MLP(2, (4,), 3)
    with pytest.raises(ValueError, match="must match"):
        training.fit(net, (torch.zeros(5, 2), torch.zeros(4, dtype=torch.long)))
    with pytest.raises(TypeError, match="expected \\(X, y\\)"):
        training.fit(net, [1, 2, 3])
    with pytest.raises(ValueError, match="num_epochs"):
        training.fit(net, _blobs(), num_epochs=0)


def test_predict_matches_forward():
    net = models.MLP(2, (4,), 3)
    X = torch.randn(1100, 2)
    with torch.no_grad():
        assert torch.allclose(training.predict(net, X), net(X))


@pytest.mark.parametrize("n", [2, 3, 5, 30, 600])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_confidence_interval_is_students_t(n, confidence):
    from scipy import stats
    values = np.random.default_rng(n).normal(size=n)
    mean, half = metrics.mean_confidence_interval(values, confidence)
    low, high = stats.t.interval(confidence, df=n - 1, loc=values.mean(), scale=stats.sem(values))
    assert mean == pytest.approx(values.mean()) and half == pytest.approx((high - low) / 2, rel=1e-9)


def test_paired_difference_cancels_what_pairs_share():
    rng = np.random.default_rng(0)
    shared = rng.normal(size=50)  # the episode's difficulty, common to both methods
    a, b = shared + 0.1 + 0.01 * rng.normal(size=50), shared + 0.01 * rng.normal(size=50)
    mean, half = metrics.paired_difference(a, b)
    assert mean == pytest.approx(0.1, abs=0.01) and mean - half > 0
    unpaired = metrics.mean_confidence_interval(a)[1] + metrics.mean_confidence_interval(b)[1]
    assert half < unpaired / 10
    with pytest.raises(ValueError, match="same episodes"):
        metrics.paired_difference(a, b[:-1])
    with pytest.raises(ValueError, match="strictly between"):
        metrics.mean_confidence_interval(a, confidence=95)


def test_metrics_docstring_examples():
    import doctest
    result = doctest.testmod(metrics)
    assert result.attempted >= 4 and result.failed == 0


def test_metrics():
    logits = torch.tensor([[2.0, 1.0], [0.0, 1.0], [3.0, 0.0]])
    assert metrics.accuracy(logits, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
    mean, half = metrics.mean_confidence_interval([1.0, 2.0, 3.0, 4.0])
    # Student's t with 3 degrees of freedom: t_{0.975, 3} = 3.182446
    assert mean == 2.5 and half == pytest.approx(3.182446 * np.std([1, 2, 3, 4], ddof=1) / 2, rel=1e-5)
    assert metrics.transfer_gain(0.8, 0.7) == pytest.approx(0.1)
    R = np.array([[0.9, 0.1, 0.0], [0.5, 0.9, 0.1], [0.3, 0.7, 0.95]])
    assert metrics.backward_transfer(R) == pytest.approx(((0.3 - 0.9) + (0.7 - 0.9)) / 2)
    with pytest.raises(ValueError, match="square"):
        metrics.backward_transfer(np.zeros((2, 3)))


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("batch_size", [1, 7, 64, 500])
def test_make_loader_yields_the_batches_of_a_plain_dataloader(shuffle, batch_size):
    # make_loader fetches whole batches at once; the batches, their order over several
    # epochs and the global random state must be exactly those of the plain DataLoader.
    X, y = torch.randn(103, 3), torch.arange(103)
    plain = DataLoader(TensorDataset(X, y), batch_size=batch_size, shuffle=shuffle,
                       generator=torch.Generator().manual_seed(5))
    ours = training.make_loader((X, y), batch_size, shuffle, seed=5)
    for _ in range(3):
        torch.manual_seed(0)
        expected = list(plain)
        after_plain = torch.rand(1)
        torch.manual_seed(0)
        got = list(ours)
        assert torch.rand(1) == after_plain
        assert len(got) == len(expected)
        for (gx, gy), (ex, ey) in zip(got, expected):
            assert torch.equal(gx, ex) and torch.equal(gy, ey)


def test_training_docstring_examples():
    import doctest

    result = doctest.testmod(training)
    assert result.attempted >= 2 and result.failed == 0


def test_best_on_validation_keeps_the_first_of_equal_scores_and_counts_since():
    best = training.BestOnValidation()
    kept = [best.update(s, i, lambda i=i: i) for i, s in enumerate([0.2, 0.5, 0.5, 0.4])]
    assert kept == [True, True, False, False]
    assert (best.score, best.at, best.state, best.since) == (0.5, 1, 1, 2)
    restored = []
    best.restore(restored.append)
    assert restored == [1]
    training.BestOnValidation().restore(restored.append)  # nothing kept: nothing restored
    assert restored == [1]


def test_fit_restores_the_best_epoch_and_stops_after_patience(monkeypatch):
    scores = iter([0.3, 0.6, 0.5, 0.4, 0.9])
    states = []

    def fake_evaluate(model, data, loss_fn=None, metric=None, device=None):
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        return 1.0, next(scores)

    monkeypatch.setattr(training, "evaluate", fake_evaluate)
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    X, y = torch.randn(12, 3), torch.randint(0, 2, (12,))
    history = training.fit(model, (X, y), (X, y), num_epochs=5, lr=0.1, batch_size=4, patience=2)
    assert history.stopped_early and history.best_epoch == 1 and len(history.val_metric) == 4
    for k, v in model.state_dict().items():
        assert torch.equal(v, states[1][k]), "the weights of the best epoch are put back"
