"""Every object of a training run saves and loads itself through one safetensors file, exactly:
same values bit for bit, and the memory layout (channels-last strides) of the live tensors."""

import pytest
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.train.average import WeightAverage
from cnnlab.train.curvature import CurvatureTracker
from cnnlab.train.optim import make_optimizer
from cnnlab.train.state import has_state, load_state, save_state


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 4, 3),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    )
    return model.to(memory_format=torch.channels_last)


def _batch():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, 8, 8, generator=gen).contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, 3, (8,), generator=gen)


def _train_a_little(model, optimizer, average=None, tracker=None, steps=3):
    x, y = _batch()
    for step in range(steps):
        if tracker is not None:
            tracker.update(x, y)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if average is not None:
            average.update(step + 1)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.stride() == b.stride() and torch.equal(a, b)


def _round_trip(tmp_path, state: dict) -> dict:
    save_state({"part": state}, tmp_path / "state.safetensors")
    assert has_state(tmp_path / "state.safetensors")
    return load_state(tmp_path / "state.safetensors")["part"]


def test_channels_last_parameters_are_what_the_test_is_about():
    assert not _model()[0].weight.is_contiguous()  # NCHW-contiguous would make the test vacuous


@pytest.mark.parametrize("name", ["sgd", "nesterov", "adam", "adamw", "adadelta"])
def test_optimizer_state_comes_back_exact_and_in_the_parameters_layout(tmp_path, name):
    model = _model()
    opt = make_optimizer(name, model.parameters(), 0.01, 1e-4)
    _train_a_little(model, opt)
    fresh = make_optimizer(name, _model().parameters(), 0.01, 1e-4)
    fresh.load_state_dict(_round_trip(tmp_path, opt.state_dict()))
    before, after = opt.state_dict(), fresh.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for pid, entries in before["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                assert _same(after["state"][pid][key], value), (pid, key)
            else:
                assert after["state"][pid][key] == value


def test_optimizers_continue_identically_after_a_round_trip(tmp_path):
    a = _model()
    opt_a = make_optimizer("nesterov", a.parameters(), 0.05, 1e-4)
    _train_a_little(a, opt_a)
    b = _model()
    b.load_state_dict(a.state_dict())
    opt_b = make_optimizer("nesterov", b.parameters(), 0.05, 1e-4)
    opt_b.load_state_dict(_round_trip(tmp_path, opt_a.state_dict()))
    _train_a_little(a, opt_a)
    _train_a_little(b, opt_b)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_weight_average_round_trips_in_place(tmp_path):
    model = _model()
    average = WeightAverage(model, 0.9)
    _train_a_little(model, make_optimizer("sgd", model.parameters(), 0.1, 0.0), average)
    fresh = WeightAverage(_model(), 0.5)
    layouts = [t.stride() for t in fresh.model.state_dict().values()]
    fresh.load_state_dict(_round_trip(tmp_path, average.state_dict()))
    assert fresh.decay == 0.9
    for (k, a), b, stride in zip(
        average.model.state_dict().items(), fresh.model.state_dict().values(), layouts, strict=True
    ):
        assert torch.equal(a, b) and b.stride() == stride, k


def test_curvature_tracker_round_trips_in_the_parameters_layout(tmp_path):
    model = _model()
    loss = nn.functional.cross_entropy
    tracker = CurvatureTracker(model, loss, seed=3)
    _train_a_little(model, make_optimizer("sgd", model.parameters(), 0.01, 0.0), tracker=tracker)
    fresh = CurvatureTracker(model, loss, seed=99)
    fresh.load_state_dict(_round_trip(tmp_path, tracker.state_dict()))
    assert fresh.lam == tracker.lam > 0
    for v, saved, p in zip(tracker.v, fresh.v, fresh.params, strict=True):
        assert torch.equal(v, saved) and saved.stride() == v.stride() == p.stride()
    # the next estimate is then the same number, whatever kernel oneDNN picks for the layout
    x, y = _batch()
    assert fresh.update(x, y) == tracker.update(x, y)


def test_a_tracker_for_another_model_is_refused(tmp_path):
    tracker = CurvatureTracker(_model(), nn.functional.cross_entropy)
    other = CurvatureTracker(nn.Linear(3, 2), nn.functional.cross_entropy)
    with pytest.raises(CnnlabError, match="eigenvector has 8 parts but the model has 2"):
        other.load_state_dict(_round_trip(tmp_path, tracker.state_dict()))


def test_a_file_without_training_state_is_a_one_line_error(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "x.safetensors")
    assert not has_state(tmp_path / "x.safetensors")
    with pytest.raises(CnnlabError, match="x.safetensors: corrupt resume state"):
        load_state(tmp_path / "x.safetensors")
    (tmp_path / "y.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(CnnlabError, match="y.safetensors: corrupt resume state"):
        load_state(tmp_path / "y.safetensors")
