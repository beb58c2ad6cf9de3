"""Tap latency of the demo server on an 800×1333 photo: `python -m tracenet.serve.bench`.

Requests go through the real app (ASGI, in process) with the model `tracenet serve` would
load. Each repetition opens a new session and taps twice at new places (so RFT plans are
not memoized from a previous repetition); the first request of all, which also captures the
graph for this input shape, is reported apart as the cold start.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np
from PIL import Image

SIZE = (1333, 800)  # width, height: the paper's 800×1333 input, no resizing at default settings


def photo() -> bytes:
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.coffee()).resize(SIZE, Image.LANCZOS).save(buf, format="PNG")
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="as `tracenet serve --checkpoint` (default: its default)")
    parser.add_argument("--reps", type=int, default=5, help="sessions measured after the cold start")
    parser.add_argument("--prepare", action="store_true", help="as `tracenet serve --prepare`")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--full", action="store_true", help="also time the full forward (FullNet), once")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")

    import torch
    from fastapi.testclient import TestClient

    from tracenet.serve.app import create_app
    from tracenet.serve.engine import load_engine

    if args.threads:
        torch.set_num_threads(args.threads)
    engine = load_engine(args.checkpoint)
    print(
        f"model {engine.info.backbone} from {engine.info.source}; torch threads {torch.get_num_threads()}; "
        f"prepare on load {args.prepare}"
    )
    image = photo()
    rng = np.random.default_rng(0)
    rows: dict[str, list[tuple[float, float, int]]] = {"open image": [], "first tap": [], "second tap": []}
    with TestClient(create_app(engine, prepare=args.prepare)) as client:

        def tap(sid: str, x: float, y: float) -> tuple[float, float, int]:
            t0 = time.perf_counter()
            response = client.post(f"/api/sessions/{sid}/taps", json={"x": x, "y": y})
            seconds = time.perf_counter() - t0
            response.raise_for_status()
            body = response.json()
            return seconds, body["seconds"], body["macs"]

        def session() -> str:
            t0 = time.perf_counter()
            response = client.post("/api/sessions", content=image)
            seconds = time.perf_counter() - t0
            response.raise_for_status()
            body = response.json()
            prepared = body["prepared"] or {"seconds": 0.0, "macs": 0}
            rows["open image"].append((seconds, prepared["seconds"], prepared["macs"]))
            return body["session"]

        t0 = time.perf_counter()
        tap(session(), SIZE[0] / 2, SIZE[1] / 2)
        rows["open image"].clear()
        print(f"cold start (graph capture for this shape, open, tap): {time.perf_counter() - t0:.2f} s")
        for _ in range(args.reps):
            sid = session()
            x, y = rng.uniform(0.2, 0.8) * SIZE[0], rng.uniform(0.2, 0.8) * SIZE[1]
            rows["first tap"].append(tap(sid, x, y))
            rows["second tap"].append(tap(sid, x + rng.uniform(-60, 60), y + rng.uniform(-60, 60)))
        full = client.post(f"/api/sessions/{sid}/full").json() if args.full else None
    print(f"{'median of ' + str(args.reps):<14} {'round trip':>11} {'model':>9} {'GMAC':>8}")
    for name, values in rows.items():
        rt, model, macs = (statistics.median(v) for v in zip(*values, strict=True))
        print(f"{name:<14} {rt:>9.3f} s {model:>7.3f} s {macs / 1e9:>8.2f}")
    if full:
        print(f"{'full forward':<14} {'':>11} {full['seconds']:>7.3f} s {full['macs'] / 1e9:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
