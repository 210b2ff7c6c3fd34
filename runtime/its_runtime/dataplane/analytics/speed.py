"""Ground speed from a track's bottom-centre path and the camera's calibration.

``metersPerPixel`` is a single ground-plane factor in *source* pixels, so normalised
displacements are scaled by the stream's width and height first. The speed is the
displacement over a window of the track's recent history (not frame to frame), which
averages out box jitter; with less history than ``min_span_s`` there is no estimate.
"""

from __future__ import annotations

from collections.abc import Sequence


def estimate_kmh(
    history: Sequence[tuple[float, float, float]],
    *,
    meters_per_pixel: float | None,
    width_px: int,
    height_px: int,
    window_s: float = 1.0,
    min_span_s: float = 0.3,
) -> float | None:
    """Speed in km/h from (time, x, y) samples (normalised), newest last; None if unknown."""
    if meters_per_pixel is None or len(history) < 2:
        return None
    t1, x1, y1 = history[-1]
    oldest = history[-1]
    for sample in reversed(history):
        if t1 - sample[0] > window_s:
            break
        oldest = sample
    t0, x0, y0 = oldest
    span = t1 - t0
    if span < min_span_s:
        return None
    dx = (x1 - x0) * width_px
    dy = (y1 - y0) * height_px
    metres = (dx * dx + dy * dy) ** 0.5 * meters_per_pixel
    return float(metres / span * 3.6)
