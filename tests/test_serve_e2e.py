"""`tracenet serve` in a real headless browser: Playwright driving Debian's chromium.

The server runs as a user would start it (`python -m tracenet serve --checkpoint ...`); the
test taps the cup of the coffee example twice and checks the overlay, the figures (trace =
full, trace cheaper), that the second tap reused the session's region cache, and the
per-stage regions toggle. It saves a screenshot of the page after the two taps into its
temporary folder; with TRACENET_UPDATE_SCREENSHOT=1 it writes docs/images/serve.png instead,
the screenshot the README shows (so a plain test run leaves the checkout unchanged).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS_SCREENSHOT = ROOT / "docs" / "images" / "serve.png"
UPDATE_SCREENSHOT = "TRACENET_UPDATE_SCREENSHOT"  # =1: refresh the README's screenshot
COFFEE_SIZE = (600, 400)
CUP_RIM, CUP_BODY = (290, 150), (300, 232)  # two taps on the cup of the coffee example


@pytest.fixture(scope="module")
def chromium() -> str:
    script = ROOT / "tests" / "e2e" / "ensure_chromium.sh"
    done = subprocess.run(["sh", str(script)], capture_output=True, text=True)
    if done.returncode == 3:
        pytest.skip(f"chromium is absent and cannot be installed here: {done.stderr.strip()}")
    assert done.returncode == 0, f"installing chromium failed:\n{done.stderr}"
    return CHROMIUM


def _visible_checkpoint(path: Path) -> Path:
    """Untrained resnet18 whose biases give a box and an all-positive mask region, so the
    browser has a real overlay to show; 400-pixel short side keeps the CPU work small."""
    import torch

    from tracenet import TraceNet

    torch.manual_seed(0)
    model = TraceNet.build(backbone="resnet18", min_size=400, max_size=667).eval()
    with torch.no_grad():
        model.dense.heads.box_pred.bias.fill_(2.0)
        model.dense.heads.controller.bias[-1] = 6.0  # the last layer's bias: logits > 0
    return model.save_checkpoint(path)


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (64, 48), 128).save(buf, format="PNG")
    return buf.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("serve")
    checkpoint = _visible_checkpoint(tmp / "untrained-visible-biases.pt")
    port = _free_port()
    log = (tmp / "server.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracenet", "serve", "--port", str(port), "--checkpoint", str(checkpoint)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/info", timeout=5).close()
                break
            except OSError:
                log.seek(0)
                assert proc.poll() is None, f"server exited:\n{log.read()}"
                assert time.monotonic() < deadline, f"server did not answer in 120 s:\n{log.read()}"
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _tap(page, x: float, y: float) -> None:
    """Click at image pixel (x, y) of the photo as displayed (it is scaled to fit)."""
    box = page.locator("#photo").bounding_box()
    page.mouse.click(
        box["x"] + x * box["width"] / COFFEE_SIZE[0], box["y"] + y * box["height"] / COFFEE_SIZE[1]
    )


def _value(page, cell: str) -> float:
    return float(page.locator(f"#{cell}").get_attribute("data-value"))


def _overlay_mask_pixels(page) -> int:
    """Pixels of the overlay canvas painted in the mask colour (box and tap marker excluded)."""
    return page.evaluate(
        """() => {
          const c = document.getElementById('overlay');
          const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          let n = 0;
          const near = (v, w) => Math.abs(v - w) <= 3;  // canvas alpha is premultiplied: allow rounding
          for (let i = 0; i < d.length; i += 4) {
            if (near(d[i], 30) && near(d[i + 1], 144) && near(d[i + 2], 255) && near(d[i + 3], 150)) n++;
          }
          return n;
        }"""
    )


def _overlay_painted_pixels(page) -> int:
    return page.evaluate(
        """() => {
          const c = document.getElementById('overlay');
          const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          let n = 0;
          for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
          return n;
        }"""
    )


def screenshot_path(tmp_path: Path) -> Path:
    """docs/images/serve.png when asked to refresh it, else a file in the test's own folder."""
    return DOCS_SCREENSHOT if os.environ.get(UPDATE_SCREENSHOT) == "1" else tmp_path / "serve.png"


def test_screenshot_goes_to_docs_only_when_asked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(UPDATE_SCREENSHOT, raising=False)
    assert screenshot_path(tmp_path) == tmp_path / "serve.png"
    monkeypatch.setenv(UPDATE_SCREENSHOT, "0")
    assert screenshot_path(tmp_path) == tmp_path / "serve.png"
    monkeypatch.setenv(UPDATE_SCREENSHOT, "1")
    assert screenshot_path(tmp_path) == DOCS_SCREENSHOT


@pytest.mark.slow
def test_tap_shows_mask_and_figures_and_second_tap_is_cheaper(
    server: str, chromium: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    errors: list[str] = []
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 760},
        )
        try:
            page = context.new_page()
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
            page.goto(server)
            expect(page.locator("#model")).to_contain_text("resnet18")
            page.get_by_role("button", name="Coffee cup").click()
            expect(page.locator("#message")).to_contain_text("600×400 image ready", timeout=60_000)

            _tap(page, *CUP_RIM)
            figures = page.locator("#figures")
            expect(figures).to_have_attribute("data-full-tap", "1", timeout=180_000)
            first_macs = _value(page, "trace-macs")
            assert abs(_value(page, "trace-score") - _value(page, "full-score")) < 1e-4
            assert _value(page, "trace-level") == _value(page, "full-level")
            assert 0 < first_macs < _value(page, "full-macs")
            for cell in ("trace-seconds", "trace-roundtrip", "full-seconds", "full-roundtrip"):
                assert _value(page, cell) > 0, cell
            mask_pixels = int(figures.get_attribute("data-mask-pixels"))
            assert mask_pixels > 500  # the crafted biases make the whole mask region positive
            # The mask is drawn under the box outline and the tap marker, which hide a few pixels.
            assert 0.9 * mask_pixels <= _overlay_mask_pixels(page) <= mask_pixels
            expect(page.locator("#ratio")).to_contain_text("mask IoU trace vs full: 1.0000")

            _tap(page, *CUP_BODY)
            expect(figures).to_have_attribute("data-full-tap", "2", timeout=180_000)
            note = page.locator("#session-note")
            expect(note).to_have_attribute("data-cheaper", "true")
            expect(note).to_contain_text("Tap 2 on this image")
            assert _value(page, "trace-macs") < first_macs
            assert page.locator("#message").get_attribute("data-kind") != "error"

            painted = _overlay_painted_pixels(page)
            page.get_by_label("show the regions RFT computed").check()
            stages = page.locator("#stage-list label")
            expect(page.locator("#stages")).to_be_visible()
            expect(stages.filter(has_text="heads P3")).to_contain_text("%")
            assert stages.count() >= 10  # backbone C1-C5, FPN and heads P3-P7, mask branch
            assert _overlay_painted_pixels(page) > painted  # the stage outlines are drawn
            assert not errors, f"the page logged errors: {errors}"
            shot = _save_screenshot(page, screenshot_path(tmp_path))
            assert shot.read_bytes().startswith(b"\x89PNG")

            # A tap on the dark margin around the photo is refused (HTTP 422, which chromium logs)
            # and explained in the page.
            viewer = page.locator("#viewer").bounding_box()
            page.mouse.click(viewer["x"] + 4, viewer["y"] + 4)
            expect(page.locator("#message")).to_contain_text("outside the 600×400 image")
            expect(page.locator("#message")).to_have_attribute("data-kind", "error")

            # Uploads: a GIF is refused by content, with the server's message; a PNG opens.
            gif = {"name": "clip.gif", "mimeType": "image/gif", "buffer": b"GIF89a" + bytes(64)}
            page.set_input_files("#upload", files=[gif])
            expect(page.locator("#message")).to_contain_text("not a PNG, JPEG or WebP image")
            page.set_input_files(
                "#upload", files=[{"name": "grey.png", "mimeType": "image/png", "buffer": _png()}]
            )
            expect(page.locator("#message")).to_contain_text("64×48 image ready", timeout=60_000)
            expect(page.locator("#credit")).to_contain_text("grey.png")
        finally:
            context.close()


def _save_screenshot(page, path: Path) -> Path:
    """The whole page as a PNG at `path`, written atomically (a checked-in file is never half-written)."""
    from tracenet.atomic import atomic_file

    with atomic_file(path) as tmp:
        page.screenshot(path=str(tmp), full_page=True)
    return path
