"""Tap latency of the demo server on an 800×1333 photo: `python -m tracenet.serve.bench`.

Requests go through the real app (ASGI, in process). By default the model is the one
`tracenet serve` loads without --checkpoint: the train stage's outputs/train/model.pt, else
an untrained model of the default config (same architecture and preprocessing). `--model`
(repeatable) adds rows measured side by side in the same process, repetitions interleaved:

    --model default                                    the model above
    --model outputs/train/model.pt                     a checkpoint
    --model "model.min_size=800 model.max_size=1333"   Hydra overrides of conf/: an untrained
    --model "~experiment"                              model of that config (here: no default
                                                       experiment, so resnet18 FPN-256 at 800/1333)

Each repetition opens a new session and taps twice at new places (so RFT plans are not
memoized from a previous repetition); the first request of all per model, which also
captures the graph for this input shape, is reported apart as the cold start.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

SIZE = (1333, 800)  # width, height: the paper's 800×1333 input
TARGET_SECONDS = 1.0  # the target: a tap answered within 1 s
ROWS = ("open image", "first tap", "second tap")


def photo() -> bytes:
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.coffee()).resize(SIZE, Image.LANCZOS).save(buf, format="PNG")
    return buf.getvalue()


def load_model(spec: str) -> Any:
    """The engine for one `--model` value: default, a checkpoint file, or conf/ overrides."""
    from tracenet.serve.engine import Engine, ModelInfo, load_engine

    if spec == "default":
        return load_engine()
    if Path(spec).is_file():
        return load_engine(spec)
    overrides = spec.split()
    if not overrides or not all("=" in o or o.startswith("~") for o in overrides):
        raise ValueError(
            f"--model {spec!r} is not 'default', an existing checkpoint file, or conf/ overrides"
        )
    from tracenet import TraceNet
    from tracenet.serve.engine import default_model_options

    try:
        options, origin = default_model_options(overrides)
    except Exception as err:  # Hydra's parse and composition errors have several types
        raise ValueError(f"--model {spec!r}: {err}") from None
    model = TraceNet.build(**options).eval()
    return Engine(model, ModelInfo(model.cfg.backbone, f"random initialisation, {origin}", None))


@dataclass
class Row:
    """One model's measurements: per row name, (round trip, model seconds, MACs) per repetition."""

    spec: str
    engine: Any
    client: Any = None
    cold: float = 0.0
    times: dict[str, list[tuple[float, float, int]]] = field(default_factory=lambda: {r: [] for r in ROWS})
    full: dict[str, Any] | None = None

    def describe(self, image_hw: tuple[int, int]) -> str:
        from tracenet.models.preprocess import geometry
        from tracenet.serve.engine import input_size

        cfg = self.engine.model.cfg
        geo = geometry(image_hw, cfg)
        (rh, rw), (ph, pw) = geo.resized, geo.padded
        return (
            f"{self.spec}: {cfg.backbone} (FPN {cfg.fpn_channels}, mask branch {cfg.mask_branch_channels}) "
            f"from {self.engine.info.source}\n  preprocessing: {input_size(cfg)}: the {image_hw[1]}×{image_hw[0]} "
            f"photo becomes {rw}×{rh}, padded to {pw}×{ph}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        action="append",
        help="default | CHECKPOINT | 'conf overrides' (repeat for rows side by side; default: default)",
    )
    parser.add_argument("--checkpoint", help="same as --model CHECKPOINT")
    parser.add_argument(
        "--reps", type=int, default=5, help="sessions measured per model after the cold start"
    )
    parser.add_argument("--prepare", action="store_true", help="as `tracenet serve --prepare`")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: as `tracenet serve` chooses)"
    )
    parser.add_argument("--full", action="store_true", help="also time the full forward (FullNet), once")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    specs = (args.model or []) + ([args.checkpoint] if args.checkpoint else [])

    import torch
    from fastapi.testclient import TestClient

    from tracenet.serve.app import create_app
    from tracenet.serve.engine import default_threads

    threads = args.threads or default_threads()  # as `tracenet serve` chooses
    if threads:
        torch.set_num_threads(threads)
    try:
        rows = [Row(spec, load_model(spec)) for spec in specs or ["default"]]
    except ValueError as err:
        parser.error(str(err))
    print(
        f"torch threads {torch.get_num_threads()}; prepare on open {args.prepare}; {args.reps} sessions per model"
    )
    image = photo()
    rng = np.random.default_rng(0)

    def tap(row: Row, sid: str, x: float, y: float) -> tuple[float, float, int]:
        t0 = time.perf_counter()
        response = row.client.post(f"/api/sessions/{sid}/taps", json={"x": x, "y": y})
        seconds = time.perf_counter() - t0
        response.raise_for_status()
        body = response.json()
        return seconds, body["seconds"], body["macs"]

    def session(row: Row) -> str:
        t0 = time.perf_counter()
        response = row.client.post("/api/sessions", content=image)
        seconds = time.perf_counter() - t0
        response.raise_for_status()
        body = response.json()
        prepared = body["prepared"] or {"seconds": 0.0, "macs": 0}
        row.times["open image"].append((seconds, prepared["seconds"], prepared["macs"]))
        return body["session"]

    for row in rows:
        # Two sessions at most: a region cache at 800×1333 holds ~0.7 GB (resnet18).
        row.client = TestClient(create_app(row.engine, max_sessions=2, prepare=args.prepare)).__enter__()
        t0 = time.perf_counter()
        tap(row, session(row), SIZE[0] / 2, SIZE[1] / 2)
        row.cold = time.perf_counter() - t0
        row.times["open image"].clear()
    try:
        for _ in range(args.reps):
            x, y = rng.uniform(0.2, 0.8) * SIZE[0], rng.uniform(0.2, 0.8) * SIZE[1]
            x2, y2 = x + rng.uniform(-60, 60), y + rng.uniform(-60, 60)
            for row in rows:  # interleaved: every model sees the same taps and a similar load
                sid = session(row)
                row.times["first tap"].append(tap(row, sid, x, y))
                row.times["second tap"].append(tap(row, sid, x2, y2))
                if args.full and row.full is None:
                    row.full = row.client.post(f"/api/sessions/{sid}/full").json()
    finally:
        for row in rows:
            row.client.__exit__(None, None, None)
    for row in rows:
        report(row, args.reps)
    return 0


def report(row: Row, reps: int) -> None:
    print()
    print(row.describe((SIZE[1], SIZE[0])))
    print(f"  cold start (graph capture for this input shape, open, tap): {row.cold:.2f} s")
    print(f"  {'of ' + str(reps):<12} {'round trip':>11} {'(max)':>9} {'model':>9} {'GMAC':>8}")
    for name, values in row.times.items():
        rt, model, macs = (statistics.median(v) for v in zip(*values, strict=True))
        worst = max(v[0] for v in values)
        print(f"  {name:<12} {rt:>9.3f} s {worst:>7.3f} s {model:>7.3f} s {macs / 1e9:>8.3f}")
    if row.full:
        print(
            f"  {'full forward':<12} {'':>11} {'':>9} {row.full['seconds']:>7.3f} s {row.full['macs'] / 1e9:>8.3f}"
        )
    taps = row.times["first tap"] + row.times["second tap"]
    worst = max(v[0] for v in taps)
    verdict = "met" if worst < TARGET_SECONDS else "NOT met"
    print(
        f"  target: every tap answered within {TARGET_SECONDS:g} s (round trip, cold start apart): "
        f"{verdict} (slowest {worst:.3f} s)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
