"""The page explains units of lenet5 and mnistnet in a real headless Chromium: every number it
shows is /api/unit's, and /api/unit's are the model's own (recomputed here in-process).

One run per model is trained (1 epoch of MNIST) and served for all the tests of this file,
and one browser serves them all."""

import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from cnnlab.checkpoint import load_checkpoint
from cnnlab.train import TrainConfig, train
from tests.serve_helpers import model_input, post_json, running_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# the layers clicked on each model: a convolution, a pooling, a dense layer (and mnistnet's
# batch norm); the softmax column is clicked on both
CLICKED = {
    "lenet5": ("conv2", "pool2", "dense1"),
    "mnistnet": ("conv2", "pool1", "dense1", "batchnorm3"),
}


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: .ci/run must install Debian's chromium")
        pytest.skip("no Chromium here (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        found = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield found
        found.close()


@pytest.fixture(scope="module", params=["lenet5", "mnistnet"])
def site(request, tmp_path_factory, mnist_root, browser):
    """(model name, base URL, checkpoint) of a served run trained for one epoch."""
    out = tmp_path_factory.mktemp(request.param) / "run"
    train(TrainConfig(model=request.param, epochs=1, augment="none", val_split=0.0, out=str(out)))
    with running_server(out) as (base, _):
        yield request.param, base, load_checkpoint(out)


@pytest.fixture
def page(browser, site):
    """A page of the site with a 7 drawn on the pad, its network shown; no script errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    found = context.new_page()
    errors = []
    found.on("pageerror", lambda e: errors.append(str(e)))
    found.goto(site[1] + "/")
    found.wait_for_selector("#summary td")
    draw_a_seven(found)
    found.wait_for_selector("#network .softmax .unit")
    yield found
    context.close()
    assert not errors, errors


def draw_a_seven(page):
    box = page.locator("#pad").bounding_box()
    left, top, w = box["x"], box["y"], box["width"]
    page.mouse.move(left + 0.3 * w, top + 0.25 * w)
    page.mouse.down()
    page.mouse.move(left + 0.7 * w, top + 0.25 * w, steps=8)
    page.mouse.move(left + 0.45 * w, top + 0.8 * w, steps=12)
    page.mouse.up()
    # a slow stroke is sent once while drawing too: wait for the network of the whole 7
    page.wait_for_function(
        "() => window.cnnlab.shown === document.getElementById('pad').toDataURL('image/png')"
    )


def at(d, key: str):
    for part in key.split("."):
        d = d[int(part)] if isinstance(d, list) else d[part]
    return d


def shown_numbers(page) -> list[tuple[str, str]]:
    return page.eval_on_selector_all(
        "#unit [data-key]", "els => els.map(e => [e.dataset.key, e.textContent])"
    )


def explained(page, layer: str) -> dict:
    """Wait until the page shows a unit of `layer`; the same unit asked of /api/unit."""
    page.wait_for_function("(l) => document.querySelector('#unit').dataset.layer === l", arg=layer)
    image = page.evaluate("window.cnnlab.image")
    position = [int(v) for v in page.get_attribute("#unit", "data-position").split(",")]
    status, d = post_json(
        page.url.rstrip("/"),
        "/api/unit",
        {"image": image, "layer": layer, "index": index_of(page, layer, position)},
    )
    assert status == 200, d
    assert d["position"] == position
    return d


def index_of(page, layer, position):
    shapes = page.evaluate("window.cnnlab.shapes")
    shape = shapes.get(layer) or [len(page.evaluate("window.cnnlab.model.classes"))]
    return int(sum(p * math.prod(shape[i + 1 :]) for i, p in enumerate(position)))


def check_shown_against(page, d: dict) -> int:
    """Every number on the unit panel is /api/unit's, to the 4 digits shown."""
    shown = shown_numbers(page)
    for key, text in shown:
        want = at(d, key)
        assert abs(float(text) - want) <= 5.1e-4 * abs(want) + 1e-15, (key, text, want)
    return len(shown)


def model_value(ckpt, d: dict) -> float:
    with torch.no_grad():
        x = model_input(ckpt, d["input_image"])
        if d["layer"] == "@softmax":
            return float(torch.softmax(ckpt.model.eval()(x)[0], 0)[d["position"][0]])
        return float(ckpt.model.eval().features(x)[d["layer"]][(0, *d["position"])])


def click_map(page, layer: str, channel: int, fy: float, fx: float) -> tuple[int, int]:
    """Click a map at a fraction of its height and width; the unit that must be chosen.
    The fractions are chosen 1.5 pixels away from the edges of the units of these maps, and
    where floor and round differ."""
    cell = page.locator(f'#network .layer[data-layer="{layer}"] .map').nth(channel)
    cell.scroll_into_view_if_needed()
    box = cell.bounding_box()
    cell.click(position={"x": fx * box["width"], "y": fy * box["height"]})
    rows, cols = int(cell.get_attribute("data-rows")), int(cell.get_attribute("data-cols"))
    return math.floor(fy * rows), math.floor(fx * cols)


def test_conv_pool_dense_and_softmax_units_show_the_models_numbers(page, site):
    name, _, ckpt = site
    conv, pool, dense, *more = CLICKED[name]
    y, x = click_map(page, conv, 2, 0.57, 0.17)
    d = explained(page, conv)
    assert d["position"] == [2, y, x] and d["rule"] == "conv"
    assert check_shown_against(page, d) >= 2 * 25 * len(d["channels"])  # every window and kernel
    assert page.locator("#unit .channel-row").count() == len(d["channels"])
    assert abs(d["value"] - model_value(ckpt, d)) <= 1e-5 * max(1, abs(d["value"]))
    rf, side = d["receptive_field"], ckpt.meta["input_shape"][1]
    outline = page.locator("#unit .figs .fig").first.locator(".outline")
    top, height = outline.evaluate("o => [o.style.top, o.style.height]")
    assert float(top[:-1]) == pytest.approx(100 * rf["top"] / side, abs=1e-3)
    assert float(height[:-1]) == pytest.approx(
        100 * (rf["bottom"] - rf["top"] + 1) / side, abs=1e-3
    )
    page.click("#unit .slider button")
    assert page.inner_text("#unit .slider button") in ("Stop", "Slide the kernel")

    y, x = click_map(page, pool, 1, 0.95, 0.13)
    d = explained(page, pool)
    assert d["position"] == [1, y, x] and d["rule"] == "pool" and d["mode"] == "max"
    assert check_shown_against(page, d) >= len(d["values"]) ** 2
    assert abs(d["value"] - model_value(ckpt, d)) <= 1e-5 * max(1, abs(d["value"]))
    assert page.locator("#unit .mat td.hit").count() == 1

    unit = page.locator(f'#network .layer[data-layer="{dense}"] .unit').nth(2)
    index = int(unit.get_attribute("data-index"))
    unit.click()
    d = explained(page, dense)
    assert d["position"] == [index] and d["rule"] == "dense"
    assert check_shown_against(page, d) >= 3 * len(d["top"]) + 3
    assert abs(d["total"] - d["value"]) <= 1e-5 * max(1, abs(d["value"]))
    assert abs(d["value"] - model_value(ckpt, d)) <= 1e-5 * max(1, abs(d["value"]))
    shown = float(unit.locator(".val").inner_text())
    assert abs(shown - d["value"]) <= 5.1e-4 * abs(d["value"]) + 1e-15

    for layer in more:  # mnistnet's batch norm after the dense layer
        page.locator(f'#network .layer[data-layer="{layer}"] .unit').first.click()
        d = explained(page, layer)
        assert d["rule"] == "batchnorm" and check_shown_against(page, d) >= 8
        keys = {key for key, _ in shown_numbers(page)}
        assert {"gamma", "input", "mean", "var", "eps", "beta", "value"} <= keys

    top = page.get_attribute("#bars .bar.top", "data-cls")
    page.locator("#network .softmax .unit").nth(ckpt.classes.index(top)).click()
    d = explained(page, "@softmax")
    assert d["rule"] == "softmax" and d["chosen"] == ckpt.classes.index(top)
    assert check_shown_against(page, d) == 3 * len(ckpt.classes) + 4
    assert abs(d["value"] - model_value(ckpt, d)) <= 1e-6
    assert page.inner_text("#unit tr.chosen .label") == top
    page.screenshot(path=str(ARTIFACTS / f"page-units-{name}.png"), full_page=True)


def test_sparsity_per_layer_is_the_models(page, site):
    _, base, ckpt = site
    image = page.evaluate("window.cnnlab.image")
    status, acts = post_json(base, "/api/activations", {"image": image})
    with torch.no_grad():
        feats = ckpt.model.eval().features(model_input(ckpt, acts["input"]))
    zeros = page.locator("#network .layer .zeros")
    want = [float((t == 0).double().mean()) for t in feats.values()]
    assert zeros.count() == len(want)
    for i, fraction in enumerate(want):
        assert float(zeros.nth(i).get_attribute("data-sparsity")) == pytest.approx(
            fraction, abs=1e-9
        )
        shown = float(zeros.nth(i).inner_text().split()[1].rstrip("%"))
        assert abs(shown - 100 * fraction) <= 0.5 + 1e-9
    assert max(want) > 0.2  # the relus' zeros are there to be seen


def test_units_are_reached_with_the_keyboard(page):
    first = page.locator('#network .layer[data-layer="conv1"] .map[tabindex="0"]')
    first.focus()
    for key in ("ArrowRight", "ArrowRight", "ArrowDown", "Enter"):
        page.keyboard.press(key)
    page.wait_for_function("() => document.querySelector('#unit').dataset.position === '0,1,2'")
    assert page.get_attribute("#unit", "data-layer") == "conv1"
    page.keyboard.press("Tab")  # one Tab stop per layer: the next layer's
    layers = page.eval_on_selector_all("#network .layer", "els => els.map(e => e.dataset.layer)")
    assert page.evaluate("document.activeElement.dataset.layer") == layers[1]
    dense = page.locator('#network .layer[data-layer="dense1"] .unit')
    dense.first.focus()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    want = dense.nth(1).get_attribute("data-index")
    page.wait_for_function(
        "(p) => document.querySelector('#unit').dataset.position === p", arg=want
    )
    assert page.get_attribute("#unit", "data-layer") == "dense1"
    column = "document.activeElement.closest('.layer').dataset.layer"
    page.keyboard.press("ArrowRight")  # the next layer's column
    assert page.evaluate(column) == layers[layers.index("dense1") + 1]
    page.keyboard.press("ArrowLeft")
    assert page.evaluate(column) == "dense1"


@pytest.fixture(scope="module")
def blocks_site(tmp_path_factory):
    from tests.conftest import make_tiny_idx
    from tests.test_page_api import BLOCKS_SPEC

    root = tmp_path_factory.mktemp("page-blocks")
    (root / "spec.yaml").write_text(BLOCKS_SPEC)
    threads = torch.get_num_threads()  # training sets it for the whole process
    train(
        TrainConfig(
            model=str(root / "spec.yaml"),
            data=str(make_tiny_idx(root / "data")),
            epochs=1,
            batch_size=32,
            augment="none",
            threads=1,
            out=str(root / "run"),
        )
    )
    torch.set_num_threads(threads)
    with running_server(root / "run") as (base, _):
        yield base


def test_a_block_opens_to_its_inside_and_explains_its_units(browser, blocks_site):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(blocks_site + "/")
    page.wait_for_selector("#summary td")
    draw_a_seven(page)
    page.wait_for_selector("#network .softmax .unit")
    blocks = page.eval_on_selector_all(
        "#network .layer.block", "els => els.map(e => e.dataset.layer)"
    )
    assert blocks == ["residual1", "inception1", "dense_block1", "transition1"]
    toggle = page.locator('#network .layer[data-layer="residual1"] .inside-toggle')
    toggle.click()
    page.wait_for_selector('#network .inside[data-layer="residual1"] .sub')
    subs = page.eval_on_selector_all(
        "#network .inside .sub h4", "els => els.map(e => e.textContent)"
    )
    assert subs[:2] == ["body.0", "body.1"] and subs[-1] == "relu"
    assert toggle.get_attribute("aria-expanded") == "true"
    for layer, rule in (
        ("residual1", "residual"),
        ("inception1", "concat"),
        ("dense_block1", "dense_block"),
    ):
        click_map(page, layer, 1, 0.5, 0.5)
        d = explained(page, layer)
        assert d["rule"] == rule and check_shown_against(page, d) >= 1
    toggle.click()
    assert page.locator("#network .inside").count() == 0
    context.close()
    assert not errors, errors


def test_a_phone_width_page_scrolls_only_inside_its_panels(browser, site):
    name, base, _ = site
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, has_touch=True
    )
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base + "/")
    page.wait_for_selector("#summary td")
    draw_a_seven(page)
    page.wait_for_selector("#network .softmax .unit")
    click_map(page, "conv1", 0, 0.5, 0.5)
    page.wait_for_selector("#unit .channel-row")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.evaluate("(n => n.scrollWidth > n.clientWidth)(document.querySelector('#network'))")
    page.screenshot(path=str(ARTIFACTS / f"page-390-{name}.png"), full_page=True)
    context.close()
    assert not errors, errors
