"""Runs a schedule: each step slices its inputs out of their producers' crops and calls the
node's rule-built function; hit nodes start out with their cached slices. On shared cores,
small steps (crops of a few cells) run on one thread: a descheduled OpenMP worker would stall
the whole team for longer than their work takes."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx

from tracenet.rft.rules import Call
from tracenet.rft.threads import running_schedule

Narrow = tuple[tuple[int, int, int], ...]  # (dim, start, length) per sliced dim


def _oversubscribed() -> bool:
    try:
        return os.getloadavg()[0] > 1.5 * (os.cpu_count() or 1)
    except OSError:  # no load average on this platform
        return True


@dataclass(frozen=True)
class Step:
    node: fx.Node
    takes: tuple[tuple[fx.Node, Narrow], ...]
    call: Call
    macs: int
    serial: bool = False  # small (a crop of a few cells): may run on one thread (see execute)


def take(value: Any, narrow: Narrow) -> Any:
    if not narrow:
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(take(v, narrow) if isinstance(v, torch.Tensor) else v for v in value)
    for dim, start, length in narrow:
        value = value.narrow(dim, start, length)
    return value


def last_uses(steps: list[Step], keep: set[fx.Node]) -> list[tuple[fx.Node, ...]]:
    """Per step, the values no later step reads (and not in `keep`): freeing them as the full
    forward does lets the allocator reuse warm memory instead of touching fresh pages."""
    last: dict[fx.Node, int] = {}
    for i, step in enumerate(steps):
        for p, _ in step.takes:
            last[p] = i
    free: list[list[fx.Node]] = [[] for _ in steps]
    for p, i in last.items():
        if p not in keep:
            free[i].append(p)
    return [tuple(f) for f in free]


def execute(
    steps: list[Step],
    env: dict[fx.Node, Any],
    outputs: Mapping[Hashable, tuple[fx.Node, Narrow]],
    free: list[tuple[fx.Node, ...]] | None = None,
) -> dict[Hashable, Any]:
    """Computes every step in order into `env` (dropping values after their last use when
    `free` is given), then slices the targets out of it. On oversubscribed cores (load average
    above 1.5 runnable threads per core) serial steps run with torch set to one thread (a
    process-wide setting, restored before returning): docs/rft.md measured 210 ms vs 10 ms for
    12 small crops under load. On idle cores every step keeps all threads: R-50's head crops at
    a tap took 22 ms on two threads of a Xeon, 33 ms on one, and switching the count for only
    the tiniest steps cost a tap about 20 ms more than never switching."""
    with running_schedule() as threads:
        current, shared = threads, _oversubscribed()
        for i, step in enumerate(steps):
            want = 1 if step.serial and shared else threads
            if want != current:
                torch.set_num_threads(want)
                current = want
            inputs = {p: take(env[p], narrow) for p, narrow in step.takes}
            env[step.node] = step.call(inputs)
            del inputs
            if free is not None:
                for p in free[i]:
                    del env[p]
    return {key: take(env[node], narrow) for key, (node, narrow) in outputs.items()}
