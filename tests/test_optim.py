import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.optim import (
    SGD,
    CurvatureTracker,
    WeightAverage,
    largest_hessian_eigenvalue,
    lr_factor,
    make_optimizer,
)


def test_hessian_eigenvalue_of_a_quadratic_matches_numpy():
    torch.manual_seed(0)
    x = torch.randn(64, 5, dtype=torch.float64) * torch.tensor(
        [3.0, 1, 1, 0.5, 0.1], dtype=torch.float64
    )
    y = torch.randn(64, 1, dtype=torch.float64)
    model = nn.Linear(5, 1, bias=False).double()
    loss = lambda out, target: 0.5 * ((out - target) ** 2).mean()  # noqa: E731  Hessian = X^T X / N
    lam = largest_hessian_eigenvalue(model, loss, [(x, y)], iterations=100)
    expected = np.linalg.eigvalsh((x.T @ x / 64).numpy()).max()
    assert lam == pytest.approx(expected, rel=1e-6)


def test_curvature_probes_leave_batchnorm_statistics_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(32, 4) * 5 + 3, torch.randint(0, 3, (32,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = nn.functional.cross_entropy
    largest_hessian_eigenvalue(model, loss, [(x, y)], iterations=3)
    assert CurvatureTracker(model, loss).update(x, y) > 0
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_schedules():
    steps = 100
    assert lr_factor("constant", steps, 10)(57) == 1
    step = lr_factor("step", steps, 10, gamma=0.5)
    assert step(9) == 1 and step(10) == 0.5 and step(25) == 0.25
    cos = lr_factor("cosine", steps, 10)
    assert cos(0) == 1 and cos(50) == pytest.approx(0.5) and cos(100) == pytest.approx(0)
    one = lr_factor("onecycle", steps, 10)
    assert one(0) == pytest.approx(0.04) and one(20) == pytest.approx(1) and one(100) == 0
    assert max(one(s) for s in range(steps)) == pytest.approx(1)


def test_every_optimizer_builds_and_unknown_ones_fail():
    p = [nn.Parameter(torch.zeros(2))]
    for name in ("sgd", "momentum", "nesterov", "adam", "adamw", "adadelta"):
        assert make_optimizer(name, p, 0.1, 0.0).param_groups[0]["lr"] == 0.1
    assert make_optimizer("nesterov", p, 0.1, 0.0).param_groups[0]["nesterov"]
    with pytest.raises(CnnlabError, match="unknown optimizer 'lion'"):
        make_optimizer("lion", p, 0.1, 0.0)


def _two_models(seed=0):
    torch.manual_seed(seed)
    a = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    b = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    b.load_state_dict(a.state_dict())
    return a, b


def _train(model, opt, steps, seed=1):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(16, 6, generator=gen), torch.randint(0, 3, (16,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"weight_decay": 0.01},
        {"momentum": 0.9},
        {"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    ],
)
def test_sgd_follows_torch_sgd_step_for_step(kw):
    ours, theirs = _two_models()
    _train(ours, SGD(ours.parameters(), 0.1, **kw), 25)
    _train(theirs, torch.optim.SGD(theirs.parameters(), 0.1, **kw), 25)
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), (p - q).abs().max()
    moved = sum(
        float((p - q).detach().abs().sum())
        for p, q in zip(ours.parameters(), _two_models()[0].parameters(), strict=True)
    )
    assert moved > 0.1  # the comparison above compared trained weights, not the start


def test_sgd_state_dict_is_interchangeable_with_torch_sgd():
    ours, theirs = _two_models()
    kw = {"momentum": 0.9, "nesterov": True}
    torch_opt = torch.optim.SGD(theirs.parameters(), 0.05, **kw)
    _train(theirs, torch_opt, 10)
    ours.load_state_dict(theirs.state_dict())
    our_opt = SGD(ours.parameters(), 0.05, **kw)
    our_opt.load_state_dict(torch_opt.state_dict())
    _train(ours, our_opt, 10, seed=2)
    _train(theirs, torch_opt, 10, seed=2)
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)
    restored = torch.optim.SGD(theirs.parameters(), 0.05, **kw)
    restored.load_state_dict(our_opt.state_dict())
    assert torch.equal(restored.state_dict()["state"][0]["momentum_buffer"], our_opt.buffers[0])


def test_weight_average_follows_its_formula_and_copies_counters():
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 3))
    average = WeightAverage(model, decay=0.9)
    expected = {k: v.double().numpy().copy() for k, v in model.state_dict().items()}
    opt = SGD(model.parameters(), 0.5)
    for step in range(1, 30):
        loss = (model(torch.randn(8, 4) + 2) - torch.randn(8, 3)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        average.update(step)
        d = min(0.9, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            live = v.double().numpy()
            expected[k] = (
                live if k.endswith("num_batches_tracked") else d * expected[k] + (1 - d) * live
            )
    got = average.model.state_dict()
    for k, v in expected.items():
        np.testing.assert_allclose(got[k].double().numpy(), v, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(
        got["1.weight"], model.state_dict()["1.weight"]
    )  # it lags the live weights
    with pytest.raises(CnnlabError, match="--ema"):
        WeightAverage(model, 1.0)
