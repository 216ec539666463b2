"""One least-squares line, for every fitted model in mcdask: links (time vs bytes), the dense
model (time vs weight bytes) and the memory model (memory vs weight bytes)."""

from __future__ import annotations

from collections.abc import Iterable


def line(points: Iterable[tuple[float, float]]) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line through (x, y) points; needs two distinct x."""
    pts = [(float(x), float(y)) for x, y in points]
    if len({x for x, _ in pts}) < 2:
        raise ValueError(f"a line needs points at two different x at least; got {pts}")
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
    return slope, my - slope * mx
