"""Example photos for the page: public-domain/CC0 pictures that scikit-image ships in its wheel.

Looked up by name in a fixed table, so a request can only ever select one of these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tracenet.serve.limits import InputError


@dataclass(frozen=True)
class Example:
    name: str
    title: str
    credit: str
    load: Callable[[], np.ndarray]


def _skimage(function: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        return np.ascontiguousarray(getattr(data, function)(), dtype=np.uint8)

    return load


EXAMPLES: dict[str, Example] = {
    e.name: e
    for e in (
        Example("coffee", "Coffee cup", "Rachel Michetti, CC0 (scikit-image)", _skimage("coffee")),
        Example("chelsea", "Chelsea the cat", "Stefan van der Walt, CC0 (scikit-image)", _skimage("chelsea")),
        Example("astronaut", "Eileen Collins", "NASA, public domain (scikit-image)", _skimage("astronaut")),
        Example("rocket", "Falcon 9 launch", "SpaceX, public domain (scikit-image)", _skimage("rocket")),
    )
}


def load_example(name: str) -> np.ndarray:
    """The named example as H×W×3 uint8; a name outside the table is refused (HTTP 404)."""
    try:
        example = EXAMPLES[name]
    except KeyError:
        raise InputError(
            f"no example named {name!r}; choose one of {', '.join(EXAMPLES)}", status=404
        ) from None
    return example.load()
