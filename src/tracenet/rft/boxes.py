"""Half-open boxes (y0, y1, x0, x1) and the few operations the tracer does on them."""

from __future__ import annotations

Box = tuple[int, int, int, int]


def union(a: Box, b: Box) -> Box:
    """Bounding box of two boxes: the paper merges consumers' regions this way."""
    return (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]))


def contains(outer: Box, inner: Box) -> bool:
    return outer[0] <= inner[0] and inner[1] <= outer[1] and outer[2] <= inner[2] and inner[3] <= outer[3]


def area(box: Box) -> int:
    return (box[1] - box[0]) * (box[3] - box[2])


def full_box(height: int, width: int) -> Box:
    return (0, height, 0, width)


def check_box(box: object, height: int, width: int, what: str) -> Box:
    """A validated box inside an (height, width) map, or a ValueError saying what is wrong."""
    if not isinstance(box, (tuple, list)) or len(box) != 4:
        raise ValueError(f"{what}: box must be 4 integers (y0, y1, x0, x1), got {box!r}")
    if not all(isinstance(v, int) or (hasattr(v, "__index__") and not isinstance(v, bool)) for v in box):
        raise TypeError(f"{what}: box coordinates must be integers, got {box!r}")
    y0, y1, x0, x1 = (int(v) for v in box)
    if y0 >= y1 or x0 >= x1:
        raise ValueError(f"{what}: box {box!r} is empty (need y0 < y1 and x0 < x1)")
    if y0 < 0 or x0 < 0 or y1 > height or x1 > width:
        raise ValueError(
            f"{what}: box {box!r} is outside the output, whose size is {height}x{width} "
            f"(need 0 <= y0 < y1 <= {height} and 0 <= x0 < x1 <= {width})"
        )
    return (y0, y1, x0, x1)
