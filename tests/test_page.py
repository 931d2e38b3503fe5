"""The web page in a real headless Chromium: draw a stroke, see probabilities and feature maps."""

import os
import shutil
from pathlib import Path

import pytest

from cnnlab.train import TrainConfig, train
from tests.serve_helpers import running_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def test_draw_a_one_and_see_the_network_work(mnist_run):
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: .ci/run must install Debian's chromium")
        pytest.skip("no Chromium here (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with running_server(mnist_run) as (base, proc), sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(base + "/")
        page.wait_for_selector("#first-kernels img")
        assert page.inner_text("#model-name") == "mnist-1conv"
        box = page.locator("#pad").bounding_box()
        x = box["x"] + box["width"] / 2
        page.mouse.move(x, box["y"] + 50)
        page.mouse.down()
        for i in range(1, 21):
            page.mouse.move(x, box["y"] + 50 + i * 9)
        page.mouse.up()
        # a slow stroke is also sent while drawing: wait for the network of the whole stroke
        page.wait_for_function(
            "() => window.cnnlab.shown === document.getElementById('pad').toDataURL('image/png')"
        )
        page.wait_for_selector("#bars .bar.top")
        page.wait_for_selector("#network .map img")
        assert page.locator("#bars .bar").count() == 10
        assert page.get_attribute("#bars .bar.top", "data-cls") == "1"
        layers = page.eval_on_selector_all(
            "#network .layer", "els => els.map(e => e.dataset.layer)"
        )
        assert layers == [
            "conv1",
            "relu1",
            "pool1",
            "dense1",
            "relu2",
            "dense2",
            "relu3",
            "dense3",
            "@softmax",
        ]
        assert page.locator("#network .layer").first.locator(".map img").count() == 8
        assert page.locator("#network .layer").nth(3).locator(".unit").count() == 32  # of 200
        assert page.get_attribute("#seen", "src").startswith("data:image/png")
        page.locator("#network .map").nth(2).click()
        page.wait_for_selector("#detail .overlay img.heat")
        assert "kernel 2 of conv1" in page.inner_text("#detail")
        page.wait_for_selector("#unit .channel-row")
        assert page.get_attribute("#unit", "data-layer") == "conv1"
        # the attribution picker lists the server's methods and draws each one's map
        assert page.is_visible("#attribution")
        offered = page.eval_on_selector_all("#attr-method option", "os => os.map(o => o.value)")
        assert {"saliency", "gradcam", "occlusion"} <= set(offered)
        maps = {}
        for method in ("saliency", "gradcam"):
            page.select_option("#attr-method", method)
            page.wait_for_function(
                f"() => document.getElementById('attr-result').textContent.startsWith('{method} for class 1')"
            )
            maps[method] = page.get_attribute("#attr-result img.heat", "src")
            assert maps[method].startswith("data:image/png")
        assert maps["saliency"] != maps["gradcam"]
        page.screenshot(path=str(ARTIFACTS / "page.png"), full_page=True)
        browser.close()
    assert not errors, errors


HOSTILE_CLASSES = [
    '<img src=x onerror="window.pwned=1">',
    "a & b &amp; <b>c</b>",
    "$& $1 $' $`",
    "  two\nlines  ",
]


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """A tiny run whose class names are markup, replacement patterns, spaces and a newline."""
    import json

    from tests.conftest import TINY_SPEC, make_tiny_idx

    root = tmp_path_factory.mktemp("names")
    (root / "tiny.yaml").write_text(TINY_SPEC)
    train(
        TrainConfig(
            model=str(root / "tiny.yaml"),
            data=str(make_tiny_idx(root / "data")),
            epochs=1,
            batch_size=32,
            optimizer="adam",
            lr=0.01,
            augment="none",
            out=str(root / "run"),
        )
    )
    for meta_path in (root / "run" / "checkpoints").glob("*.json"):
        meta = json.loads(meta_path.read_text())
        if "classes" in meta:
            meta["classes"] = HOSTILE_CLASSES
            meta_path.write_text(json.dumps(meta))
    return root / "run"


def test_class_names_show_as_text_never_as_markup(hostile_run):
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium here (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with running_server(hostile_run) as (base, proc), sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(base + "/")
        page.wait_for_selector("#summary td")
        box = page.locator("#pad").bounding_box()
        page.mouse.move(box["x"] + 60, box["y"] + 60)
        page.mouse.down()
        page.mouse.move(box["x"] + 200, box["y"] + 200, steps=10)
        page.mouse.up()
        page.wait_for_selector("#bars .bar.top")
        page.wait_for_selector("#network .map img")
        shown = page.eval_on_selector_all("#bars .label", "els => els.map(e => e.textContent)")
        rendered = page.eval_on_selector_all("#bars .label", "els => els.map(e => e.innerText)")
        cls = page.eval_on_selector_all("#bars .bar", "els => els.map(e => e.dataset.cls)")
        assert sorted(shown) == sorted(rendered) == sorted(cls) == sorted(HOSTILE_CLASSES)
        outputs = "#network .softmax .unit .idx"
        in_network = page.eval_on_selector_all(outputs, "els => els.map(e => e.textContent)")
        assert in_network == HOSTILE_CLASSES
        page.locator("#network .map").first.click()
        page.wait_for_selector("#detail .overlay img.heat")
        said = page.inner_text("#detail")
        assert any(f"Saliency of class {name} (SmoothGrad)" in said for name in HOSTILE_CLASSES)
        page.locator("#network .softmax .unit").first.click()
        page.wait_for_selector("#unit table.contrib .label")
        in_unit = page.eval_on_selector_all("#unit .label", "els => els.map(e => e.textContent)")
        assert in_unit == HOSTILE_CLASSES
        assert HOSTILE_CLASSES[0] in page.inner_text("#unit .unit-title")
        assert (
            page.locator(
                "#bars img, #bars b, #detail b, #detail img:not(.kernel):not(.overlay img), "
                "#network b, #unit b, #network .unit img, #unit table img"
            ).count()
            == 0
        )
        assert page.evaluate("window.pwned") is None
        browser.close()
    assert not errors, errors
