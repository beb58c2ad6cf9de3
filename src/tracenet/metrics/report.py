"""Writers for evaluation outputs: DVC metrics JSON, `dvc plots` data, a markdown report.

Every file is written atomically (temporary file in the same folder, then os.replace), so a
stage interrupted half-way never leaves a truncated metrics file for DVC to read.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from tracenet.atomic import write_json, write_text


def write_csv(path: str | Path, rows: Sequence[dict]) -> Path:
    """Rows of dicts sharing their keys (the first row's keys give the columns)."""
    if not rows:
        raise ValueError(f"write_csv: no rows for {path}")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buf.getvalue())


def band_rows(summary: dict) -> list[dict]:
    """Per-band curve for `dvc plots` (x: band, y: miou_t / mta)."""
    return [{"band": int(b), **row} for b, row in summary["per_band"].items()]


def category_rows(summary: dict) -> list[dict]:
    """Per-category bars, worst mIoU-T first (the categories that need attention)."""
    rows = [
        {
            "category_id": int(c),
            "name": r["name"],
            "instances": r["instances"],
            "miou_t": r["miou_t"],
            "mta": r["mta"],
        }
        for c, r in summary["per_category"].items()
    ]
    return sorted(rows, key=lambda r: r["miou_t"])


def write_evaluation(summary: dict, metrics_path: str | Path, plots_dir: str | Path) -> dict[str, Path]:
    """The evaluate stage's outputs: metrics JSON and the per-band / per-category plot data."""
    plots_dir = Path(plots_dir)
    return {
        "metrics": write_json(metrics_path, summary),
        "per_band": write_json(plots_dir / "per_band.json", band_rows(summary)),
        "per_category": write_csv(plots_dir / "per_category.csv", category_rows(summary)),
    }


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def evaluation_markdown(summary: dict, title: str = "TraceNet evaluation", max_categories: int = 20) -> str:
    """Human-readable report of one evaluation (the same numbers as the metrics JSON)."""
    o, tau = summary["overall"], summary["tau"]
    sizes = [{"size": k, **v} for k, v in summary["per_size"].items()]
    cats = category_rows(summary)
    parts = [
        f"# {title}",
        f"{o['instances']} instances, {o['taps']} simulated taps; τ = {tau}.",
        "## Overall",
        markdown_table([o], ["miou_t", "mta", "taps_mta", "center_miou", "instances"]),
        "mIoU-T: mean over instances of the mean IoU of the simulated taps (eq. 1). "
        f"mTA: mean over instances of the fraction of all mask pixels whose tap gives IoU > {tau} (eq. 2). "
        "taps_mta: the same fraction over the simulated taps only. center_miou: one tap at the "
        "mask's distance-transform maximum (RITM/SAM convention).",
        "## Per band (inner to outer)",
        markdown_table(band_rows(summary), ["band", "miou_t", "mta", "instances"]),
        "## Per COCO size",
        markdown_table(sizes, ["size", "miou_t", "mta", "center_miou", "instances"]),
        f"## Per category (worst {min(max_categories, len(cats))} of {len(cats)} by mIoU-T)",
        markdown_table(cats[:max_categories], ["name", "instances", "miou_t", "mta"]),
    ]
    return "\n\n".join(parts) + "\n"


def write_ablation(summary: dict, metrics_path: str | Path, plots_dir: str | Path) -> dict[str, Path]:
    """The ablate stage's outputs: metrics JSON and the accuracy-vs-MACs points."""
    from tracenet.metrics.ablation import accuracy_vs_macs_rows

    return {
        "metrics": write_json(metrics_path, summary),
        "accuracy_vs_macs": write_json(
            Path(plots_dir) / "accuracy_vs_macs.json", accuracy_vs_macs_rows(summary)
        ),
    }


def ablation_markdown(summary: dict, title: str = "TraceNet vs FullNet") -> str:
    """Per-mode cost and accuracy, and the exactness of trace mode against FullNet."""
    modes = []
    for name, s in summary["modes"].items():
        peak = s["peak_memory_bytes"]
        modes.append(
            {
                "mode": name,
                "taps": s["taps"],
                "miou_t": s["miou_t"],
                "GMACs/tap": s["macs_mean"] / 1e9,
                "median ms": s["latency_median_s"] * 1e3,
                "p90 ms": s["latency_p90_s"] * 1e3,
                "peak MiB": "n/a" if peak is None else peak / 2**20,
            }
        )
    exact = [{"mode": k.removesuffix("_vs_full"), **v} for k, v in summary.items() if k.endswith("_vs_full")]
    parts = [
        f"# {title}",
        "Same checkpoint, same taps. `trace_session`: taps on one image share an RFT region cache.",
        "## Cost and accuracy per tap",
        markdown_table(modes, ["mode", "taps", "miou_t", "GMACs/tap", "median ms", "p90 ms", "peak MiB"]),
        "## Trace vs full on the same taps",
        markdown_table(
            exact, ["mode", "max_head_diff", "min_mask_iou", "miou_t_diff", "macs_ratio", "latency_ratio"]
        ),
    ]
    return "\n\n".join(parts) + "\n"
