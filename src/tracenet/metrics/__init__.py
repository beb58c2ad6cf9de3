"""Evaluation: the paper's tap metrics, their breakdowns, the fast evaluator and the ablation."""

from tracenet.metrics.taps import DEFAULT_TAU, mask_iou, miou_t, mta, tap_area

__all__ = ["DEFAULT_TAU", "mask_iou", "miou_t", "mta", "tap_area"]
