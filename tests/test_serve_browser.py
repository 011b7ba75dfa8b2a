"""The web page of `safegen serve` in a real headless browser (Playwright driving Debian's Chromium).

Playwright cannot download its own browsers here, so it drives the system's ``chromium``
(``apt-get install -y chromium``); without it this file is skipped, saying so, except under
CI (``CI=true``), where a missing browser fails the run instead.
"""

from __future__ import annotations

import base64
import io
import shutil
from importlib.util import find_spec

import numpy as np
import pytest
from PIL import Image

try:
    from playwright import sync_api
except ImportError:
    sync_api = None

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Skipped locally when something is missing; under CI (CI=true) each missing piece fails the run.
pytestmark = [
    pytest.mark.needs(find_spec("fastapi") is not None, reason="fastapi is not installed (pip install '.[serve]')"),
    pytest.mark.needs(sync_api is not None, reason="playwright is not installed (pip install playwright)"),
    pytest.mark.needs(
        CHROMIUM is not None, reason="Debian's chromium is not installed (apt-get install -y chromium); no browser"
    ),
]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

from safegen.serve import ServeConfig, create_app  # noqa: E402
from safegen.serve.engines import ImageEngine  # noqa: E402
from safegen.serve.server import BackgroundServer as LoopbackServer  # noqa: E402


@pytest.fixture(scope="module")
def engine_parts(tiny_pipes):
    from safegen.safety import load_classifier

    safe, original = tiny_pipes
    return safe, original, load_classifier("toy")


def serve(parts, **kw):
    safe, original, classifier = parts
    config = ServeConfig(steps=3, max_wait_ms=0, check="toy", **kw)
    engine = ImageEngine(
        safe,
        original=original if config.allow_compare else None,
        classifier=classifier,
        policy=config.policy,
        model_id="tiny",
        safe_encoder_id="tiny/safe",
        classifier_name="toy",
    )
    return LoopbackServer(create_app(config, image_engine=engine))


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def data_url_pixels(src: str) -> np.ndarray:
    assert src.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def screenshot_region(png: bytes, box: dict) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        shot = np.asarray(im.convert("RGB"), dtype=np.int16)
    x, y, w, h = (int(round(box[k])) for k in ("x", "y", "width", "height"))
    return shot[y : y + h, x : x + w]


def test_page_generates_and_shows_the_verdict(browser, engine_parts, tmp_path):
    import httpx

    with serve(engine_parts) as srv:
        page = browser.new_page(viewport={"width": 900, "height": 700})
        page.goto(srv.url + "/")
        sync_api.expect(page.locator("#model-line")).to_contain_text("model tiny")
        sync_api.expect(page.locator("#model-line")).to_contain_text("classifier toy")
        assert page.locator("#size").input_value() == "64x64"
        assert page.locator("#compare-label").is_hidden() and page.locator("#key-row").is_hidden()

        page.fill("#prompt", "a red circle on a white background")
        page.fill("#seed", "7")
        page.click("#generate")
        img = page.locator("figure[data-variant=safe] img")
        sync_api.expect(img).to_be_visible(timeout=60_000)
        sync_api.expect(page.locator("#status")).to_have_text("done")
        verdict = page.locator("figure[data-variant=safe] .verdict").inner_text()
        assert "unsafe score" in verdict and "toy" in verdict
        assert page.locator("figure[data-variant=original]").count() == 0
        assert "seed 7" in page.locator("#details").inner_text()

        # The page shows exactly what the API returns for the same request.
        shown = data_url_pixels(img.get_attribute("src"))
        api = httpx.post(
            srv.url + "/v1/images/generations",
            json={"prompt": "a red circle on a white background", "seed": 7, "size": "64x64"},
            timeout=60,
        ).json()["data"][0]
        with Image.open(io.BytesIO(base64.b64decode(api["b64_json"]))) as im:
            assert np.array_equal(shown, np.asarray(im.convert("RGB"), dtype=np.int16))
        expected_verdict = "passed the check" if api["decision"] == "pass" else "flagged"
        assert verdict.startswith(expected_verdict)

        # The screenshot holds the generated image where the page put it, scaled to 256 px.
        shot = page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        box = img.bounding_box()
        assert round(box["width"]) == 256 and round(box["height"]) == 256
        region = screenshot_region(shot, box)
        scaled = np.asarray(
            Image.fromarray(shown.astype(np.uint8)).resize(region.shape[1::-1], Image.Resampling.NEAREST),
            dtype=np.int16,
        )
        assert region.std() > 1.0  # not a blank box
        assert np.abs(region.mean(axis=(0, 1)) - scaled.mean(axis=(0, 1))).max() < 12
        page.close()


def test_page_compare_only_with_allow_compare_and_api_key(browser, engine_parts, tmp_path):
    with serve(engine_parts, allow_compare=True, api_keys=["page-key"]) as srv:
        page = browser.new_page(viewport={"width": 900, "height": 700})
        page.goto(srv.url + "/")
        sync_api.expect(page.locator("#compare-label")).to_be_visible()
        sync_api.expect(page.locator("#key-row")).to_be_visible()
        page.fill("#prompt", "a blue square")
        page.fill("#seed", "3")
        page.check("#compare")
        page.click("#generate")  # no key yet: the server refuses and the page says why
        sync_api.expect(page.locator("#status")).to_contain_text("missing or wrong API key", timeout=30_000)

        page.fill("#api-key", "page-key")
        page.click("#generate")
        sync_api.expect(page.locator("figure")).to_have_count(2, timeout=60_000)
        assert page.locator("figure").nth(0).get_attribute("data-variant") == "original"
        assert page.locator("figure").nth(1).get_attribute("data-variant") == "safe"
        original = data_url_pixels(page.locator("figure[data-variant=original] img").get_attribute("src"))
        safe = data_url_pixels(page.locator("figure[data-variant=safe] img").get_attribute("src"))
        assert not np.array_equal(original, safe)  # different text encoders, same seed
        for variant in ("original", "safe"):
            assert "seed 3" in page.locator(f"figure[data-variant={variant}] figcaption").inner_text()

        shot = page.screenshot(path=str(tmp_path / "compare.png"))
        left = screenshot_region(shot, page.locator("figure[data-variant=original] img").bounding_box())
        right = screenshot_region(shot, page.locator("figure[data-variant=safe] img").bounding_box())
        assert left.shape == right.shape == (256, 256, 3)
        assert np.abs(left - right).mean() > 1.0  # the two images really differ on screen
        page.close()
