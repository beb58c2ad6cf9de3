"""The demo's HTTP API with a small real TraceNet: sessions, taps, limits, isolation."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tracenet.serve.app import create_app
from tracenet.serve.engine import Engine, ModelInfo, load_engine
from tracenet.serve.limits import Limits


@pytest.fixture(scope="module")
def engine() -> Engine:
    import torch

    from tracenet import TraceNet

    torch.manual_seed(0)
    model = TraceNet.build(
        backbone="resnet18", min_size=64, max_size=128, fpn_channels=32, mask_branch_channels=16
    ).eval()
    return Engine(model, ModelInfo("resnet18", "test", None))


@pytest.fixture
def client(engine: Engine):
    with TestClient(create_app(engine, Limits(max_bytes=200_000), max_sessions=2)) as c:
        yield c


def png(width: int, height: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def upload(client: TestClient, data: bytes):
    return client.post("/api/sessions", content=data, headers={"Content-Type": "application/octet-stream"})


def decode_data_url(url: str) -> np.ndarray:
    head, payload = url.split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(payload))))


def test_page_and_assets_come_from_memory_not_paths(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and '<canvas id="overlay"' in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    probes = [
        "/static/index.html",
        "/static/..%2Fapp.py",
        "/static/%2e%2e/limits.py",
        "/etc/passwd",
        "/api/sessions/..%2F..%2F..%2Fetc%2Fpasswd/image",
        "/api/sessions/%2e%2e/image",
        "/docs",
        "/openapi.json",
    ]
    for probe in probes:
        response = client.get(probe)
        assert response.status_code == 404, probe
        assert "import" not in response.text and "root:" not in response.text


def test_info_names_the_model_limits_and_examples(client: TestClient) -> None:
    info = client.get("/api/info").json()
    assert info["model"] == {"backbone": "resnet18", "source": "test", "min_size": 64, "max_size": 128}
    assert info["warning"] is None
    assert info["limits"]["max_bytes"] == 200_000
    assert {e["name"] for e in info["examples"]} >= {"coffee", "chelsea"}


def test_example_session_serves_its_image(client: TestClient) -> None:
    opened = client.post("/api/sessions?example=chelsea").json()
    assert (opened["width"], opened["height"]) == (451, 300)
    photo = client.get(f"/api/sessions/{opened['session']}/image")
    assert photo.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(photo.content)).size == (451, 300)
    missing = client.post("/api/sessions?example=../../etc/passwd")
    assert missing.status_code == 404 and "choose one of" in missing.json()["error"]


def test_taps_return_mask_and_figures_and_reuse_the_session_cache(client: TestClient) -> None:
    sid = upload(client, png(120, 80)).json()["session"]
    first = client.post(f"/api/sessions/{sid}/taps", json={"x": 60.7, "y": 40.2})
    assert first.status_code == 200, first.text
    r1 = first.json()
    assert r1["tap"] == 1 and r1["click"] == [60, 40] and r1["level"] in range(3, 8)
    assert r1["macs"] > 0 and r1["first_macs"] == r1["macs"] and r1["seconds"] > 0
    overlay = decode_data_url(r1["mask"])
    assert overlay.shape == (80, 120, 4)
    assert int((overlay[..., 3] > 0).sum()) == r1["mask_pixels"]
    stages = {g["stage"]: g for g in r1["regions"]}
    assert {"backbone C5", "FPN P3", "heads P3", "heads P7", "mask branch /8"} <= set(stages)
    assert stages["backbone C5"]["share"] == 1.0  # P7's heads at the tap see all of C5
    assert 0 < stages["heads P3"]["share"] < 1  # ...while P3's heads need only a window
    for g in r1["regions"]:
        x0, y0, x1, y1 = g["box"]
        assert 0 <= x0 < x1 <= 120 and 0 <= y0 < y1 <= 80, g

    full = client.post(f"/api/sessions/{sid}/full").json()
    assert full["tap"] == 1 and full["level"] == r1["level"]
    assert full["score"] == pytest.approx(r1["score"], abs=1e-4)
    assert full["iou_with_trace"] >= 0.999 and full["macs"] >= r1["macs"]  # toy size: maps computed whole

    r2 = client.post(f"/api/sessions/{sid}/taps", json={"x": 64, "y": 44}).json()
    assert r2["tap"] == 2 and r2["first_macs"] == r1["macs"] and r2["macs"] < r1["macs"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"x": 120, "y": 5}, 422, "outside the 120×80 image"),
        ({"x": 5, "y": -1}, 422, "outside"),
        ({"x": "5", "y": 5}, 422, "finite number"),
        ([5, 5], 400, "JSON object"),
        ("not json", 400, "JSON object"),
        ({"x": 1, "y": 1, "pad": "z" * 2000}, 413, "small JSON object"),
    ],
)
def test_bad_taps_get_clear_errors(client: TestClient, body: object, status: int, words: str) -> None:
    sid = upload(client, png(120, 80)).json()["session"]
    content = body.encode() if isinstance(body, str) else None
    kwargs = {"content": content} if content is not None else {"json": body}
    response = client.post(f"/api/sessions/{sid}/taps", **kwargs)
    assert response.status_code == status and words in response.json()["error"]


def test_bad_uploads_and_unknown_sessions_get_clear_errors(client: TestClient) -> None:
    assert upload(client, b"GIF89a....").status_code == 415
    too_big = upload(client, b"\0" * 300_000)
    assert too_big.status_code == 413 and "limit" in too_big.json()["error"]
    assert upload(client, b"").status_code == 400
    for path in ["/api/sessions/nope/image", "/api/sessions/nope/full"]:
        method = client.get if path.endswith("image") else client.post
        response = method(path)
        assert response.status_code == 404 and "pick or upload the image again" in response.json()["error"]
    sid = upload(client, png(64, 64)).json()["session"]
    early = client.post(f"/api/sessions/{sid}/full")
    assert early.status_code == 422 and "tap the image first" in early.json()["error"]


def test_upload_without_length_is_cut_off_at_the_limit(client: TestClient) -> None:
    """A chunked upload (no Content-Length) is refused as soon as it passes the byte limit."""

    def chunks():
        for _ in range(100):  # 100 × 10 kB = 1 MB, five times the client's 200 kB limit
            yield b"\0" * 10_000

    response = client.post("/api/sessions", content=chunks())
    assert response.status_code == 413 and "limit" in response.json()["error"]


def test_a_tap_on_one_session_leaves_the_others_untouched(client: TestClient) -> None:
    a = upload(client, png(120, 80, seed=5)).json()["session"]
    b = upload(client, png(120, 80, seed=6)).json()["session"]
    ra = client.post(f"/api/sessions/{a}/taps", json={"x": 30, "y": 30}).json()
    assert ra["tap"] == 1
    early = client.post(f"/api/sessions/{b}/full")  # a's tap is not b's latest tap
    assert early.status_code == 422 and "tap the image first" in early.json()["error"]
    rb = client.post(f"/api/sessions/{b}/taps", json={"x": 30, "y": 30}).json()
    assert rb["tap"] == 1 and rb["first_macs"] == rb["macs"]  # b's own cache started empty
    assert client.post(f"/api/sessions/{a}/taps", json={"x": 90, "y": 60}).json()["tap"] == 2


def test_sessions_are_isolated_and_bounded(client: TestClient) -> None:
    a = upload(client, png(120, 80, seed=1)).json()["session"]
    b = upload(client, png(64, 96, seed=2)).json()["session"]
    assert Image.open(io.BytesIO(client.get(f"/api/sessions/{a}/image").content)).size == (120, 80)
    assert Image.open(io.BytesIO(client.get(f"/api/sessions/{b}/image").content)).size == (64, 96)
    # A tap valid in a's image is outside b's: each id reaches its own image only.
    assert client.post(f"/api/sessions/{b}/taps", json={"x": 100, "y": 10}).status_code == 422
    upload(client, png(64, 64, seed=3))  # max_sessions=2: the least recently used (a) goes
    assert client.get(f"/api/sessions/{a}/image").status_code == 404
    assert client.get(f"/api/sessions/{b}/image").status_code == 200


def test_loopback_server_refuses_foreign_host_headers(engine: Engine) -> None:
    app = create_app(engine, allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url="http://127.0.0.1") as c:
        assert c.get("/api/info").status_code == 200
        assert c.get("/api/info", headers={"Host": "attacker.example"}).status_code == 400


def test_without_a_checkpoint_the_demo_runs_the_default_config_untrained(tmp_path: Path) -> None:
    """Same architecture and preprocessing as the checkpoint the train stage would write."""
    from tracenet.config import compose

    engine = load_engine(default=tmp_path / "model.pt")
    expected = compose().model
    cfg = engine.model.cfg
    for key in ("backbone", "fpn_channels", "mask_branch_channels", "min_size", "max_size"):
        assert getattr(cfg, key) == expected[key], key
    assert engine.info.source == "random initialisation"
    assert "randomly initialised" in engine.info.warning and f"{cfg.max_size} px" in engine.info.warning
    with pytest.raises(FileNotFoundError, match="--checkpoint"):
        load_engine(tmp_path / "typo.pt")


def test_prepare_on_load_moves_the_shared_work_out_of_the_taps(engine: Engine) -> None:
    with TestClient(create_app(engine, prepare=True)) as c:
        opened = upload(c, png(120, 80, seed=4)).json()
        prepared = opened["prepared"]
        assert prepared["macs"] > 0 and prepared["seconds"] > 0
        tap = c.post(f"/api/sessions/{opened['session']}/taps", json={"x": 10, "y": 70}).json()
        assert 0 < tap["macs"] < prepared["macs"]  # the backbone came from the cache
    with TestClient(create_app(engine)) as c:
        assert upload(c, png(120, 80, seed=4)).json()["prepared"] is None
