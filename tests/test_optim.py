import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.optim import largest_hessian_eigenvalue, lr_factor, make_optimizer


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
