"""Backward region rules, one family per module: `bind(node, facts)` picks the node's rule,
or the whole-region fallback when none proves exact."""

from __future__ import annotations

import torch.nn.functional as F
from torch import fx, nn

from tracenet.rft.rules.adaptive import bind_adaptive
from tracenet.rft.rules.base import WHOLE, Call, Facts, Fallback, Need, NoRule, Op, SDims
from tracenet.rft.rules.layout import bind_layout
from tracenet.rft.rules.pointwise import bind_pointwise
from tracenet.rft.rules.resample import bind_resample
from tracenet.rft.rules.window import bind_window

_BINDERS = (bind_window, bind_adaptive, bind_resample, bind_pointwise, bind_layout)

# Whole-input ops whose output keeps the input's layout: they fall back, but what follows them
# can still be cropped in their coordinates.
_LAYOUT_KEEPING_MODULES = (nn.GroupNorm, nn.InstanceNorm2d, nn.LocalResponseNorm)
_LAYOUT_KEEPING_FUNCTIONS = {F.group_norm, F.instance_norm, F.local_response_norm, F.normalize}


def _describe(node: fx.Node, facts: Facts) -> str:
    if node.op == "call_module":
        return type(facts.module(node.target)).__name__
    return getattr(node.target, "__name__", str(node.target))


def _fallback(node: fx.Node, facts: Facts, reason: str) -> Fallback:
    source = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    same_shape = source is not None and facts.shapes.get(source) == facts.shapes.get(node)
    keeps = (node.op == "call_module" and isinstance(facts.module(node.target), _LAYOUT_KEEPING_MODULES)) or (
        node.op == "call_function" and node.target in _LAYOUT_KEEPING_FUNCTIONS
    )
    sdims = facts.sdims.get(source) if keeps and same_shape and source is not None else None
    return Fallback(node, facts, f"{_describe(node, facts)}: {reason}", sdims)


def bind(node: fx.Node, facts: Facts) -> Op:
    """The rule for one data node whose value depends on the model input."""
    for binder in _BINDERS:
        try:
            op = binder(node, facts)
        except NoRule as e:
            return _fallback(node, facts, str(e))
        if op is not None:
            return op
    return _fallback(node, facts, "no cropping rule for this op")


__all__ = ["WHOLE", "Call", "Facts", "Fallback", "Need", "NoRule", "Op", "SDims", "bind"]
