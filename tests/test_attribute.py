"""Attribution maps mean what they claim: on a network built by hand so that the answer is
known, each method points at the pixels that decide; integrated gradients add up; each
method agrees with a direct computation of its definition; and all of them run on every
family of the zoo."""

import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab import zoo
from cnnlab.errors import CnnlabError
from cnnlab.inspect.attribute import METHODS, SIGNED, attribute, default_layer
from cnnlab.inspect.deconv import deconv
from cnnlab.inspect.saliency import saliency
from cnnlab.spec import build, retarget

SIDE, HALF = 16, 8
QUADRANT_SPEC = {
    "name": "quadrant",
    "input": [1, SIDE, SIDE],
    "classes": 2,
    "layers": [
        {"type": "conv", "filters": 1, "kernel": 3, "padding": "same"},
        {"type": "relu"},
        {"type": "pool", "mode": "mean", "size": 2},
        {"type": "dense"},
    ],
}


def quadrant_net() -> nn.Module:
    """Class 0's logit is the sum, over the top-left quadrant's interior, of a thresholded 3x3
    mean of the pixels: a function of the top-left 8x8 pixels and of nothing else. Class 1's
    logit is a constant."""
    model = build(QUADRANT_SPEC).eval()
    with torch.no_grad():
        model.conv1.weight.fill_(1 / 9)
        model.conv1.bias.fill_(-0.5)  # quiet on the faint background, firing on the blob
        model.dense1.weight.zero_()
        model.dense1.bias.copy_(torch.tensor([0.0, 0.1]))
        # pool cells (r, c) with r, c in 1..2 pool conv rows/columns 2..5, whose 3x3 windows
        # stay inside rows/columns 1..6 of the image: inside the quadrant, away from its edge
        w = torch.zeros(SIDE // 2, SIDE // 2)
        w[1:3, 1:3] = 1.0
        model.dense1.weight[0] = w.flatten()
    return model


def quadrant_input(distractor: bool, seed: int = 0) -> torch.Tensor:
    """Faint noise everywhere, a bright blob inside the quadrant, and (if asked) the same blob
    far outside it, where the logit cannot see it."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 1, SIDE, SIDE, generator=gen) * 0.3
    x[..., 2:6, 2:6] = 1.0
    if distractor:
        x[..., 10:14, 10:14] = 1.0
    return x


QUADRANT = np.zeros((SIDE, SIDE), bool)
QUADRANT[:HALF, :HALF] = True


def test_the_quadrant_net_sees_only_its_quadrant():
    model = quadrant_net()
    x = quadrant_input(distractor=False)
    y = x.clone()
    y[..., HALF:, :] = torch.rand(1, 1, SIDE - HALF, SIDE) * 5
    y[..., :, HALF:] = torch.rand(1, 1, SIDE, SIDE - HALF) * 5
    torch.testing.assert_close(model(x), model(y))  # nothing outside the quadrant matters
    assert model(x)[0, 0] > 0.5 and model(x).argmax() == 0


def _inside(amap: np.ndarray) -> float:
    mass = np.abs(amap)
    return float(mass[QUADRANT].sum() / mass.sum())


OPTIONS = {"occlusion": {"window": 4, "stride": 2}}


@pytest.mark.parametrize("method", [m for m in METHODS if m != "gradcam"])
def test_every_method_puts_its_mass_where_the_decision_is(method):
    """A second blob outside the quadrant excites the conv exactly as the first does, but the
    logit cannot see it: a method that looks at the decision ignores it."""
    model = quadrant_net()
    for seed in range(3):
        amap, cls = attribute(model, quadrant_input(True, seed), method, **OPTIONS.get(method, {}))
        assert cls == 0 and amap.shape == (SIDE, SIDE)
        assert _inside(amap) > 0.97, (method, seed, _inside(amap))
        assert QUADRANT.flat[np.abs(amap).argmax()]


def test_gradcam_lights_the_blob_that_decides():
    """Grad-CAM weighs whole channels, so it is asked about an image with one blob: the map,
    upsampled from the pooled 8x8 layer, must sit on the blob inside the quadrant."""
    model = quadrant_net()
    for layer in ("conv1", "relu1", "pool1"):
        amap, _ = attribute(model, quadrant_input(False), "gradcam", layer=layer)
        assert amap.shape == (SIDE, SIDE) and amap.min() >= 0
        assert _inside(amap) > 0.95, (layer, _inside(amap))
        r, c = divmod(int(amap.argmax()), SIDE)
        assert 1 <= r <= 6 and 1 <= c <= 6, (layer, r, c)
    assert default_layer(model) == "conv1"


def test_integrated_gradients_add_up_to_the_change_of_the_score():
    """Completeness (Sundararajan et al. 2017, axiom): the attributions sum to
    f(x) - f(baseline). Checked in float64 on a random mnistnet and on the quadrant net."""
    torch.manual_seed(0)
    for model, x in (
        (build(zoo.spec("mnistnet")).double().eval(), torch.randn(1, 1, 28, 28).double()),
        (quadrant_net().double(), quadrant_input(True).double()),
    ):
        base = torch.full_like(x, -0.5)
        for cls in range(2):
            amap, _ = attribute(model, x, "integrated-gradients", cls, steps=256, baseline=base)
            with torch.no_grad():
                change = float(model(x)[0, cls] - model(base)[0, cls])
            assert amap.dtype == np.float64
            assert abs(amap.sum() - change) <= 2e-3 * max(1.0, abs(change)), (amap.sum(), change)


def test_occlusion_is_the_score_drop_averaged_over_covering_windows():
    """By the definition, on a colour input: every window position blanks all channels; a
    pixel's value is the mean drop over the windows that cover it."""
    torch.manual_seed(1)
    model = build(retarget(zoo.spec("lenet5"), (3, 32, 32), 10)).eval()
    x = torch.randn(1, 3, 32, 32)
    window, stride, cls = 8, 4, 3
    amap, _ = attribute(model, x, "occlusion", cls, window=window, stride=stride, baseline=-1.0)
    total, count = torch.zeros(32, 32), torch.zeros(32, 32)
    with torch.no_grad():
        score = model(x)[0, cls]
        for r in range(0, 32 - window + 1, stride):
            for c in range(0, 32 - window + 1, stride):
                y = x.clone()
                y[..., r : r + window, c : c + window] = -1.0
                total[r : r + window, c : c + window] += score - model(y)[0, cls]
                count[r : r + window, c : c + window] += 1
    np.testing.assert_allclose(amap, (total / count).numpy(), rtol=1e-4, atol=1e-5)


def _grad(model, x, cls):
    inp = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(inp)[0, cls], inp)
    return g


def test_saliency_and_smoothgrad_are_the_mean_absolute_gradient():
    torch.manual_seed(2)
    model = build(retarget(zoo.spec("lenet5"), (3, 32, 32), 10)).eval()
    x = torch.randn(1, 3, 32, 32)
    amap, cls = attribute(model, x, "saliency")
    np.testing.assert_allclose(amap, _grad(model, x, cls).abs()[0].amax(0).numpy(), rtol=1e-6)
    # SmoothGrad's noise comes from a generator seeded for the call, drawn in one batch
    samples, noise, seed = 6, 0.2, 5
    amap, _ = attribute(model, x, "smoothgrad", cls, samples=samples, noise=noise, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    copies = x + noise * float(x.max() - x.min()) * torch.randn((samples, 3, 32, 32), generator=gen)
    want = torch.stack([_grad(model, c[None], cls).abs()[0] for c in copies]).mean(0).amax(0)
    np.testing.assert_allclose(amap, want.numpy(), rtol=1e-4, atol=1e-7)


def test_smoothgrad_is_reproducible_in_threads_and_leaves_the_global_generator_alone():
    torch.manual_seed(3)
    model = build(zoo.spec("mnistnet")).eval()
    xs = [torch.randn(1, 1, 28, 28) for _ in range(4)]
    state = torch.get_rng_state()
    serial = [saliency(model, x, smooth=8)[0] for x in xs]
    assert torch.equal(torch.get_rng_state(), state)  # a caller's own random stream goes on
    results = [None] * 4

    def work(i):
        results[i] = saliency(model, xs[i], smooth=8)[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, serial, strict=True):
        np.testing.assert_array_equal(got, want)
    assert torch.equal(torch.get_rng_state(), state)


def _zeiler_fergus(model, x, layer, channel, pos):
    """The deconvnet walked by hand, layer by layer (top-level layers only): autograd's
    adjoint for each linear layer, and a ReLU of the signal at every rectifier."""
    feats = model.features(x, upto=layer)
    names = list(feats)
    h = feats[layer]
    signal = torch.zeros_like(h)
    signal[0, channel, pos[0], pos[1]] = h[0, channel, pos[0], pos[1]].clamp_min(0)
    inputs = [x, *(feats[n] for n in names[:-1])]
    for name, inp in zip(reversed(names), reversed(inputs), strict=True):
        module = getattr(model, name)
        if isinstance(module, (nn.ReLU, nn.LeakyReLU)):
            signal = torch.relu(signal)
            continue
        inp = inp.detach().clone().requires_grad_(True)
        (signal,) = torch.autograd.grad(module(inp), inp, grad_outputs=signal)
    return signal


LEAKY_SPEC = {
    "name": "leaky",
    "input": [1, 16, 16],
    "classes": 3,
    "layers": [
        {"type": "conv", "filters": 4, "kernel": 3, "padding": "same"},
        {"type": "leaky_relu", "slope": 0.1},
        {"type": "pool", "size": 2},
        {"type": "conv", "filters": 6, "kernel": 3},
        {"type": "relu"},
        {"type": "dense"},
    ],
}


@pytest.mark.parametrize("name", ["mnistnet", "leaky"])
def test_deconv_is_zeiler_and_fergus_walk(name):
    """On plain nets Captum's deconvnet is the walk by hand, leaky ReLU rectifying too."""
    torch.manual_seed(4)
    model = build(zoo.spec("mnistnet") if name == "mnistnet" else LEAKY_SPEC).eval()
    x = torch.randn(1, 1, *model.input_shape[1:])
    for layer in [n for n, s in model.shapes.items() if len(s) == 3]:
        recon, channel, pos = deconv(model, x, layer)
        want = _zeiler_fergus(model, x, layer, channel, pos)
        torch.testing.assert_close(recon, want, rtol=1e-4, atol=1e-6, msg=layer)


def test_deconvolution_rectifies_inside_blocks_too():
    """Without max pooling there are no switches: the deconvnet's path back down depends on
    the weights alone, so the map of a class is the same for any input. That holds only if
    the ReLUs inside every residual block rectify the signal rather than pass the gradient."""
    torch.manual_seed(5)
    model = build(retarget(zoo.spec("resnet20"), (3, 16, 16), 10)).eval()
    maps = [attribute(model, torch.randn(1, 3, 16, 16), "deconvolution", 3)[0] for _ in range(2)]
    np.testing.assert_allclose(maps[0], maps[1], rtol=1e-4, atol=1e-6)
    grads = [attribute(model, torch.randn(1, 3, 16, 16), "saliency", 3)[0] for _ in range(2)]
    assert not np.allclose(grads[0], grads[1], rtol=1e-2)  # the plain gradient does depend


FAMILIES = {
    "lenet5": None,
    "mnistnet": None,
    "mnist-fakecnn": None,
    "resnet20": (3, 16, 16),
    "googlenet": (3, 32, 32),
    "densenet121": (3, 32, 32),
}
QUICK = {
    "smoothgrad": {"samples": 2},
    "integrated-gradients": {"steps": 4},
    "occlusion": {"window": 16, "stride": 16},
}


@pytest.mark.parametrize("name", FAMILIES)
def test_every_method_runs_on_every_family(name):
    spec = zoo.spec(name)
    if FAMILIES[name]:
        spec = retarget(spec, FAMILIES[name], 10)
    torch.manual_seed(0)
    model = build(spec).eval()
    x = torch.randn(1, *model.input_shape)
    for method in METHODS:
        amap, cls = attribute(model, x, method, **QUICK.get(method, {}))
        assert amap.shape == tuple(model.input_shape[1:]) and np.isfinite(amap).all(), method
        assert 0 <= cls < spec["classes"]
        assert method in SIGNED or amap.min() >= 0, method


def test_wrong_choices_are_one_line_errors():
    model = quadrant_net()
    x = quadrant_input(False)
    cases = [
        ({"method": "lime"}, "unknown attribution method 'lime'; methods: saliency, smoothgrad"),
        ({"method": "saliency", "cls": 2}, r"class 2 is out of range \(0..1\)"),
        ({"method": "saliency", "cls": -1}, r"class -1 is out of range \(0..1\)"),
        (
            {"method": "gradcam", "layer": "conv9"},
            "Grad-CAM: no layer 'conv9'; layers with spatial maps: conv1, relu1, pool1",
        ),
        ({"method": "gradcam", "layer": "dense1"}, "Grad-CAM: no spatial maps in 'dense1'"),
        (
            {"method": "occlusion", "window": 40},
            "occlusion: window must be an integer in 1..16, got 40",
        ),
        (
            {"method": "occlusion", "window": 4, "stride": 5},
            "occlusion: stride must be an integer in 1..4",
        ),
        (
            {"method": "integrated-gradients", "steps": 1},
            "integrated-gradients: steps must be an integer in 2..4096",
        ),
        (
            {"method": "integrated-gradients", "baseline": float("nan")},
            "baseline must be a finite number",
        ),
        ({"method": "smoothgrad", "noise": -1}, "smoothgrad: noise must be a number in 0..10"),
        ({"method": "saliency", "steps": 3}, "saliency: unknown option steps; it takes no options"),
    ]
    for kwargs, message in cases:
        kwargs = dict(kwargs)
        method = kwargs.pop("method")
        with pytest.raises(CnnlabError, match=message) as info:
            attribute(model, x, method, **kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(CnnlabError, match=r"ONE image input \(1, C, H, W\); got \(2, 1, 16, 16\)"):
        attribute(model, x.repeat(2, 1, 1, 1), "saliency")


def test_cli_attribute_draws_the_methods_and_refuses_bad_choices(tiny, tmp_path):
    from PIL import Image

    from cnnlab.train import TrainConfig, train

    data, spec = tiny
    train(
        TrainConfig(
            model=str(spec),
            data=str(data),
            epochs=1,
            batch_size=32,
            optimizer="adam",
            lr=0.01,
            augment="none",
            out=str(tmp_path / "run"),
        )
    )
    picture = np.zeros((12, 12), np.uint8)
    picture[1:5, 7:11] = 230
    Image.fromarray(picture).save(tmp_path / "q.png")
    run = [
        sys.executable,
        "-m",
        "cnnlab",
        "inspect",
        "attribute",
        str(tmp_path / "run"),
        str(tmp_path / "q.png"),
    ]
    out = subprocess.run(
        [*run, "--out", str(tmp_path / "all.png")], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    with Image.open(tmp_path / "all.png") as img:
        wide = img.width
    out = subprocess.run(
        [
            *run,
            "--method",
            "gradcam",
            "--method",
            "occlusion",
            "--layer",
            "relu1",
            "--out",
            str(tmp_path / "two.png"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    with Image.open(tmp_path / "two.png") as img:
        assert img.width < 0.7 * wide  # three columns instead of eight
    for extra, message in (
        (["--class", "9"], "Error: --class 9 is out of range (0..3: 0, 1, 2, 3)"),
        (
            ["--method", "gradcam", "--layer", "dense2"],
            "Error: Grad-CAM: no spatial maps in 'dense2'",
        ),
        (["--method", "saliency", "--layer", "conv9"], "Error: Grad-CAM: no layer 'conv9'"),
        (["--method", "shap"], "Invalid value for '--method'"),
    ):
        out = subprocess.run([*run, *extra], capture_output=True, text=True, timeout=300)
        assert out.returncode != 0 and message in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
        if message.startswith("Error: "):
            assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1


def test_the_cli_names_exactly_the_methods():
    from cnnlab.cli.inspecting import METHOD_NAMES

    assert list(METHOD_NAMES) == list(METHODS)
