"""TraceNet vs FullNet ablation: same taps, same accuracy, exactness and cost figures."""

from __future__ import annotations

import numpy as np
import pytest

from test_evaluate import small_model  # same tiny random model as the evaluator tests
from tracenet.metrics.ablation import (
    AblationTap,
    PeakRSS,
    accuracy_vs_macs_rows,
    run_ablation,
    summarize_ablation,
)


@pytest.fixture(scope="module")
def summary():
    """Trace mode plans every tap (RFT), so even two taps on a tiny image take seconds."""
    model = small_model()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(45, 67, 3), dtype=np.uint8)
    gt = np.zeros((45, 67), bool)
    gt[10:30, 15:40] = True
    taps = [AblationTap(1, (20, 15), gt), AblationTap(2, (5, 40), gt)]
    return summarize_ablation(run_ablation(model, [(image, taps), (image, [])]))


@pytest.mark.slow
def test_trace_and_full_agree(summary):
    for mode in ("trace", "trace_session"):
        ex = summary[f"{mode}_vs_full"]
        assert ex["max_head_diff"] <= 1e-4
        assert ex["min_mask_iou"] >= 0.999
        assert ex["miou_t_diff"] <= 1e-3


@pytest.mark.slow
def test_cost_figures_are_measured_per_tap(summary):
    modes = summary["modes"]
    assert set(modes) == {"full", "trace", "trace_session"}
    for s in modes.values():
        assert s["taps"] == 2
        assert s["macs_mean"] > 0
        assert 0 < s["latency_median_s"] <= s["latency_p90_s"]
    # A session reuses crops: its taps never cost more than independent trace taps.
    assert modes["trace_session"]["macs_mean"] <= modes["trace"]["macs_mean"]
    assert modes["trace"]["macs_mean"] <= modes["full"]["macs_mean"]
    rows = accuracy_vs_macs_rows(summary)
    assert [r["mode"] for r in rows] == ["full", "trace", "trace_session"]


def test_peak_rss_sees_native_allocations_even_when_memory_was_freed_before():
    import torch

    chunks = [torch.ones(2**18) for _ in range(96)]  # 96 MiB on the heap, then freed (kept by malloc)
    del chunks
    with PeakRSS() as mem:
        chunks = [torch.ones(2**18) for _ in range(64)]  # 64 MiB of torch's native allocations
        del chunks
    if mem.peak is None:
        pytest.skip("this kernel cannot reset the peak RSS (/proc/self/clear_refs)")
    assert mem.peak >= 48 * 2**20


def test_no_taps_is_a_clear_error():
    with pytest.raises(ValueError, match="no taps were measured"):
        summarize_ablation(run_ablation(small_model(), []))


@pytest.mark.slow
def test_ablation_outputs(summary, tmp_path):
    import json

    from tracenet.metrics.report import ablation_markdown, write_ablation

    paths = write_ablation(summary, tmp_path / "metrics.json", tmp_path / "plots")
    assert json.loads(paths["metrics"].read_text())["modes"]["full"]["taps"] == 2
    points = json.loads(paths["accuracy_vs_macs"].read_text())
    assert {p["mode"] for p in points} == {"full", "trace", "trace_session"}
    md = ablation_markdown(summary)
    assert "| trace_session |" in md and "min_mask_iou" in md
