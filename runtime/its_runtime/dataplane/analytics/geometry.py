"""Plane geometry in normalised image coordinates (x right, y down, both 0..1).

Sign conventions are fixed here once. ``side`` is the z of ``(end - start) x (p - start)``;
with y pointing down the image, a positive value lies on the right-hand side of a
person walking from ``start`` to ``end`` as seen on screen. The config promises that
"crossing left-to-right of start->end is 'in'": from negative side to positive side.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Point = tuple[float, float]
FloatArray = npt.NDArray[np.float64]


def bottom_centre(box: Sequence[float] | FloatArray) -> Point:
    """Where the object touches the ground: middle of the box's bottom edge."""
    x1, _, x2, y2 = (float(v) for v in box[:4])
    return ((x1 + x2) / 2.0, y2)


def side(start: Point, end: Point, p: Point) -> float:
    """Signed distance of ``p`` from the infinite line start->end (> 0: right-hand side)."""
    dx, dy = end[0] - start[0], end[1] - start[1]
    length = (dx * dx + dy * dy) ** 0.5
    if length == 0.0:
        return 0.0
    return float((dx * (p[1] - start[1]) - dy * (p[0] - start[0])) / length)


def segment_parameter(start: Point, end: Point, p0: Point, p1: Point) -> float | None:
    """Where the move p0->p1 meets the line start->end, as a fraction along start->end.

    None when the move is parallel to the line. A value in [0, 1] means the move
    crosses within the drawn segment.
    """
    rx, ry = end[0] - start[0], end[1] - start[1]
    sx, sy = p1[0] - p0[0], p1[1] - p0[1]
    denom = rx * sy - ry * sx
    if abs(denom) < 1e-12:
        return None
    qpx, qpy = p0[0] - start[0], p0[1] - start[1]
    return (qpx * sy - qpy * sx) / denom


def point_in_polygon(p: Point, polygon: Sequence[Point]) -> bool:
    """Even-odd rule (ray casting); points exactly on an edge may go either way."""
    x, y = p
    inside = False
    n = len(polygon)
    for i in range(n):
        xa, ya = polygon[i]
        xb, yb = polygon[(i + 1) % n]
        if (ya > y) != (yb > y):
            x_cross = xa + (y - ya) * (xb - xa) / (yb - ya)
            if x < x_cross:
                inside = not inside
    return inside


def iou_matrix(a: FloatArray, b: FloatArray) -> FloatArray:
    """Pairwise IoU of boxes ``a`` (N, 4) and ``b`` (M, 4), xyxy."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    out: FloatArray = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
    return out
