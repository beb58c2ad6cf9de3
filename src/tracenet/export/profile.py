"""Profile every artifact in a folder: cold start, warm latency, peak RSS, file size, MACs.

    python -m tracenet.export.profile outputs/export --out outputs/profile --threads 1 2 --runs 20

Each (artifact, threads) pair runs in a fresh interpreter, so cold start is a real first load
and peak RSS belongs to that artifact alone. Writes ``profile.json`` and ``profile.md``
(with the TraceNet / FullNet latency ratio of every backbone and format).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tracenet.export import metadata, runners
from tracenet.export.files import write_json, write_text


def measure(path: Path, threads: int, runs: int, warmup: int) -> dict:
    """One artifact in this process: load + first call, then ``runs`` timed calls after ``warmup``."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    meta = metadata.read(path)
    s = meta["input_size"][0]
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, 3, s, s), dtype=np.float32)
    cells = np.array([[s // 16 // 2**k, s // 16 // 2**k] for k in range(5)], dtype=np.int32)
    inputs = {  # a centre tap, the predicted box, a square image (latency does not depend on them)
        "image": image,
        "cells": cells,
        "prompt": np.zeros(4, dtype=np.float32),
        "extent": np.full(2, s // 8, dtype=np.int32),
    }
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    run = runners.load(path, threads)
    load_s = time.perf_counter() - t0
    run(**inputs)
    cold_s = time.perf_counter() - t0
    for _ in range(warmup):
        run(**inputs)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        run(**inputs)
        times.append(time.perf_counter() - t)
    return {
        "artifact": path.name,
        "backbone": meta["backbone"],
        "mode": meta["mode"],
        "format": meta["format"],
        "precision": meta["precision"],
        "input_size": s,
        "threads": threads,
        "load_ms": 1e3 * load_s,
        "cold_start_ms": 1e3 * cold_s,
        "median_ms": 1e3 * statistics.median(times),
        "p90_ms": 1e3 * float(np.percentile(times, 90)),
        "runs": runs,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_load_mb": rss0 / 1024,
        "file_mb": path.stat().st_size / 2**20,
        "macs": meta["macs"],
    }


def artifacts_in(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    found = sorted(p for p in folder.glob("*") if p.suffix in runners.KINDS)
    if not found:
        raise FileNotFoundError(
            f"no .onnx/.tflite artifacts in {folder}: run `python pipelines/export.py` first"
        )
    return found


def profile_all(folder: str | Path, threads=(1, 2), runs: int = 20, warmup: int = 3) -> list[dict]:
    """Every artifact at every thread count, each in its own child process (cold start, RSS)."""
    rows = []
    for path in artifacts_in(folder):
        for n in threads:
            cmd = [sys.executable, "-m", "tracenet.export.profile", "--one", str(path)]
            cmd += ["--threads", str(n), "--runs", str(runs), "--warmup", str(warmup)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"profiling {path.name} at {n} threads failed:\n{done.stderr[-2000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


def ratios(rows: list[dict]) -> list[dict]:
    """TraceNet median / FullNet median for each backbone, format, precision, size and thread count."""
    key = ("backbone", "format", "precision", "input_size", "threads")
    by = {(tuple(r[k] for k in key), r["mode"]): r for r in rows}
    out = []
    for (k, mode), r in by.items():
        full = by.get((k, "full"))
        if mode == "trace" and full:
            out.append(
                {
                    **dict(zip(key, k, strict=True)),
                    "trace_ms": r["median_ms"],
                    "full_ms": full["median_ms"],
                    "latency_ratio": r["median_ms"] / full["median_ms"],
                    "mac_ratio": r["macs"] / full["macs"],
                }
            )
    return out


def markdown(rows: list[dict], rat: list[dict]) -> str:
    lines = [
        "| artifact | threads | cold start ms | median ms | p90 ms | peak RSS MB | file MB | GMAC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['artifact']} | {r['threads']} | {r['cold_start_ms']:.0f} | {r['median_ms']:.1f} | "
            f"{r['p90_ms']:.1f} | {r['peak_rss_mb']:.0f} | {r['file_mb']:.1f} | {r['macs'] / 1e9:.2f} |"
        )
    lines += [
        "",
        "| backbone | format | precision | size | threads | TraceNet ms | FullNet ms | latency ratio | MAC ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rat:
        lines.append(
            f"| {r['backbone']} | {r['format']} | {r['precision']} | {r['input_size']} | {r['threads']} | "
            f"{r['trace_ms']:.1f} | {r['full_ms']:.1f} | {r['latency_ratio']:.2f} | {r['mac_ratio']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def write_report(rows: list[dict], out_dir: str | Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    rat = ratios(rows)
    js = write_json(out_dir / "profile.json", {"rows": rows, "ratios": rat})
    return js, write_text(out_dir / "profile.md", markdown(rows, rat))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tracenet.export.profile", description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", help="folder of .onnx/.tflite artifacts (with their .json)")
    p.add_argument("--out", default="outputs/profile", help="where profile.json/profile.md go")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--one", help=argparse.SUPPRESS)  # child mode: one artifact, JSON on stdout
    a = p.parse_args(argv)
    if a.one:
        print(json.dumps(measure(Path(a.one), a.threads[0], a.runs, a.warmup)))
        return
    if a.folder is None:
        p.error("give the artifact folder, e.g. outputs/export")
    js, md = write_report(profile_all(a.folder, a.threads, a.runs, a.warmup), a.out)
    print(md.read_text(), end="")
    print(f"wrote {js} and {md}")


if __name__ == "__main__":
    main()
