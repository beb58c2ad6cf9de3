"""Profile every artifact in a folder: cold start, warm latency, peak RSS, file size, MACs.

    python -m tracenet.export.profile outputs/export --out outputs/profile --threads 1 2 --runs 20

Each (artifact, threads) pair runs in a fresh interpreter, so cold start is a real first load
and peak RSS belongs to that artifact alone. Then each TraceNet artifact and its FullNet partner
run in one more interpreter with their calls alternated (``measure_pair``, together with the
exact fallback the host uses: the dense-mask TraceNet when exported), so that they see the same
machine load: the TraceNet / FullNet latency ratio comes from those calls. Where the folder has
the export stage's ``verify.json`` with ``fallback_rate`` (how often a tap needs the exact
fallback, ``tracenet.export.fallback``), the ratio including those fallbacks is reported too.
Writes ``profile.json`` and ``profile.md``.
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

from tracenet.export import fallback, metadata, runners
from tracenet.export.build import DENSE_MASK
from tracenet.export.files import write_json, write_text


def measure(path: Path, threads: int, runs: int, warmup: int) -> dict:
    """One artifact in this process: load + first call, then ``runs`` timed calls after ``warmup``."""
    _check_counts(runs, warmup)
    meta = metadata.read(path)
    s = meta["input_size"][0]
    inputs = sample_inputs(s)
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


def _check_counts(runs: int, warmup: int) -> None:
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")


def sample_inputs(s: int) -> dict[str, np.ndarray]:
    """A centre tap, the predicted box, a square random image (latency does not depend on them)."""
    image = np.random.default_rng(0).standard_normal((1, 3, s, s), dtype=np.float32)
    return {
        "image": image,
        "cells": np.array([[s // 16 // 2**k, s // 16 // 2**k] for k in range(5)], dtype=np.int32),
        "prompt": np.zeros(4, dtype=np.float32),
        "extent": np.full(2, s // 8, dtype=np.int32),
    }


def measure_pair(trace: Path, threads: int, runs: int, warmup: int) -> dict:
    """A TraceNet artifact, its FullNet partner and, for a windowed TraceNet, the exact fallback
    the host uses (``fallback.exact_artifact``: the dense-mask TraceNet, else FullNet itself) in
    this process, their calls alternated (the order rotates every round)."""
    _check_counts(runs, warmup)
    full = fallback.partner(trace)
    meta = metadata.read(trace)
    exact = full if fallback.window_cells(meta) is None else fallback.exact_artifact(trace)
    inputs = sample_inputs(meta["input_size"][0])
    paths = {"trace": trace, "full": full}
    if exact != full:
        paths["exact"] = exact
    run = {k: runners.load(p, threads) for k, p in paths.items()}
    times = {k: [] for k in paths}
    order = list(paths)
    for i in range(warmup + runs):
        for mode in order[i % len(order) :] + order[: i % len(order)]:
            t = time.perf_counter()
            run[mode](**inputs)
            if i >= warmup:
                times[mode].append(time.perf_counter() - t)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    return {
        "trace": trace.name,
        "full": full.name,
        "exact": exact.name,  # the fallback where the window clips (FullNet when it is the partner)
        **{k: meta[k] for k in ("backbone", "format", "precision")},
        "input_size": meta["input_size"][0],
        "threads": threads,
        "runs": runs,
        "trace_ms": ms["trace"],
        "full_ms": ms["full"],
        "exact_ms": ms.get("exact", ms["full"]),
        "mac_ratio": meta["macs"] / metadata.read(full)["macs"],
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
            rows.append(_child("--one", path, n, runs, warmup, f"{path.name} at {n} threads"))
    return rows


def _child(mode: str, path: Path, threads: int, runs: int, warmup: int, what: str) -> dict:
    """Runs ``mode`` (``--one`` or ``--pair``) on ``path`` in a fresh interpreter; its JSON line."""
    cmd = [sys.executable, "-m", "tracenet.export.profile", mode, str(path)]
    cmd += ["--threads", str(threads), "--runs", str(runs), "--warmup", str(warmup)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"profiling {what} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def profile_pairs(folder: str | Path, threads=(1, 2), runs: int = 20, warmup: int = 3) -> list[dict]:
    """Every TraceNet artifact with its FullNet partner, calls alternated, one child process each."""
    pairs = []
    for path in artifacts_in(folder):
        if "_trace_" in path.name and fallback.partner(path).is_file():
            for n in threads:
                what = f"{path.name} alternated with FullNet at {n} threads"
                pairs.append(_child("--pair", path, n, runs, warmup, what))
    return pairs


def fallback_rates(folder: str | Path) -> dict:
    """``summary.fallback_rate`` of the export stage's ``verify.json`` in ``folder`` ({} if none)."""
    path = Path(folder) / "verify.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text()).get("summary", {}).get("fallback_rate", {})


def ratios(rows: list[dict], pairs: list[dict] | None = None, rates: dict | None = None) -> list[dict]:
    """TraceNet / FullNet median latency for each backbone, format, precision, size and thread
    count: from the alternated calls (``pairs``) where measured, else from the separate runs.
    With ``rates`` (``fallback_rates``), the expected ratio per tap including fallbacks, with
    the fallback the host uses (``exact``: the dense-mask TraceNet when exported, else FullNet;
    its latency ``X``): a prompt box whose region exceeds the window costs one ``X`` call instead
    of the TraceNet call, a clipped predicted box an ``X`` call after it."""
    key = ("backbone", "format", "precision", "input_size", "threads")
    by = {(tuple(r[k] for k in key), r["mode"]): r for r in rows}
    alt = {tuple(p[k] for k in key): p for p in pairs or []}
    out = []
    for k in dict.fromkeys([kk for kk, mode in by if mode == "trace" and (kk, "full") in by] + list(alt)):
        if k in alt:
            t, f, macs = alt[k]["trace_ms"], alt[k]["full_ms"], alt[k]["mac_ratio"]
            x, exact = alt[k].get("exact_ms", f), alt[k].get("exact", alt[k]["full"])
        else:
            t, f = by[k, "trace"]["median_ms"], by[k, "full"]["median_ms"]
            macs = by[k, "trace"]["macs"] / by[k, "full"]["macs"]
            dense = by.get((k, DENSE_MASK))
            x, exact = (
                (f, by[k, "full"]["artifact"]) if dense is None else (dense["median_ms"], dense["artifact"])
            )
        r = {
            **dict(zip(key, k, strict=True)),
            "alternated": k in alt,
            "trace_ms": t,
            "full_ms": f,
            "latency_ratio": t / f,
            "mac_ratio": macs,
            "exact": exact,
            "exact_ms": x,
            "exact_ratio": x / f,
        }
        rate = (rates or {}).get(k[0])
        if rate:
            p, q = rate["prompt_box"], rate["predicted_box"]
            r["fallback_prompt_box"], r["fallback_predicted_box"] = p, q
            r["expected_ratio_prompt_box"] = ((1 - p) * t + p * x) / f
            r["expected_ratio_predicted_box"] = (t + q * x) / f
        out.append(r)
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
        "Latency ratio: medians of TraceNet and FullNet calls alternated in one process (`alt`, with",
        "the exact fallback's calls), else of the separate runs above. Exact fallback: the artifact",
        "the host uses where TraceNet's mask window clips (dense-mask TraceNet, else FullNet), its",
        "latency / FullNet's. Fallback: share of coco_mini val taps (prompt box / predicted box) whose",
        "mask region exceeds the window; expected ratio: per tap / FullNet, including those fallback",
        "calls (prompt box: instead of TraceNet; predicted box: after it).",
        "",
        "| backbone | format | precision | size | threads | TraceNet ms | FullNet ms | latency ratio "
        "| MAC ratio | exact fallback (ratio) | fallback prompt / predicted | expected ratio prompt / predicted |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rat:
        fb = exp = "–"
        if "fallback_prompt_box" in r:
            fb = f"{r['fallback_prompt_box']:.1%} / {r['fallback_predicted_box']:.1%}"
            exp = f"{r['expected_ratio_prompt_box']:.2f} / {r['expected_ratio_predicted_box']:.2f}"
        lines.append(
            f"| {r['backbone']} | {r['format']} | {r['precision']} | {r['input_size']} | {r['threads']} | "
            f"{r['trace_ms']:.1f} | {r['full_ms']:.1f} | {r['latency_ratio']:.2f}"
            f"{' alt' if r['alternated'] else ''} | {r['mac_ratio']:.2f} | {r['exact']} ({r['exact_ratio']:.2f}) "
            f"| {fb} | {exp} |"
        )
    return "\n".join(lines) + "\n"


def write_report(
    rows: list[dict], out_dir: str | Path, pairs: list[dict] | None = None, rates: dict | None = None
) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    rat = ratios(rows, pairs, rates)
    doc = {"rows": rows, "alternated": pairs or [], "fallback_rate": rates or {}, "ratios": rat}
    js = write_json(out_dir / "profile.json", doc)
    return js, write_text(out_dir / "profile.md", markdown(rows, rat))


def profile_folder(folder, out_dir, threads=(1, 2), runs: int = 20, warmup: int = 3) -> tuple[Path, Path]:
    """Profile every artifact in ``folder`` (separately, then in TraceNet/FullNet pairs) and
    write ``profile.json`` and ``profile.md`` to ``out_dir``."""
    rows = profile_all(folder, threads, runs, warmup)
    pairs = profile_pairs(folder, threads, runs, warmup)
    return write_report(rows, out_dir, pairs, fallback_rates(folder))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tracenet.export.profile", description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", help="folder of .onnx/.tflite artifacts (with their .json)")
    p.add_argument("--out", default="outputs/profile", help="where profile.json/profile.md go")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--one", help=argparse.SUPPRESS)  # child mode: one artifact, JSON on stdout
    p.add_argument("--pair", help=argparse.SUPPRESS)  # child mode: TraceNet + FullNet alternated
    a = p.parse_args(argv)
    if a.one:
        print(json.dumps(measure(Path(a.one), a.threads[0], a.runs, a.warmup)))
        return
    if a.pair:
        print(json.dumps(measure_pair(Path(a.pair), a.threads[0], a.runs, a.warmup)))
        return
    if a.folder is None:
        p.error("give the artifact folder, e.g. outputs/export")
    js, md = profile_folder(a.folder, a.out, a.threads, a.runs, a.warmup)
    print(md.read_text(), end="")
    print(f"wrote {js} and {md}")


if __name__ == "__main__":
    main()
