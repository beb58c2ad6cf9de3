"""Runs a schedule: each step slices its inputs out of their producers' crops and calls the
node's rule-built function; hit nodes start out with their cached slices."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx

from tracenet.rft.rules import Call

Narrow = tuple[tuple[int, int, int], ...]  # (dim, start, length) per sliced dim


@dataclass(frozen=True)
class Step:
    node: fx.Node
    takes: tuple[tuple[fx.Node, Narrow], ...]
    call: Call
    macs: int


def take(value: Any, narrow: Narrow) -> Any:
    if not narrow:
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(take(v, narrow) if isinstance(v, torch.Tensor) else v for v in value)
    for dim, start, length in narrow:
        value = value.narrow(dim, start, length)
    return value


def execute(
    steps: list[Step],
    env: dict[fx.Node, Any],
    outputs: Mapping[Hashable, tuple[fx.Node, Narrow]],
) -> dict[Hashable, Any]:
    """Computes every step in order into `env`, then slices the targets out of it."""
    for step in steps:
        inputs = {p: take(env[p], narrow) for p, narrow in step.takes}
        env[step.node] = step.call(inputs)
    return {key: take(env[node], narrow) for key, (node, narrow) in outputs.items()}
