"""Ground speed from a track's bottom-centre path and the camera's calibration.

With a 4-point ``calibration`` the path is mapped onto the road plane through the
camera's homography (:mod:`.calibration`), so a vehicle far from the camera is as fast
as the same vehicle near it. Without one, ``metersPerPixel`` is a single ground-plane
factor in *source* pixels: normalised displacements are scaled by the stream's width
and height first (right only for a camera looking straight down). The speed is
measured over a window of the track's recent history (not frame to frame), which
averages out box jitter; with less history than ``min_span_s`` there is no estimate.
On the ground plane it is the slope of a least-squares line through every sample of
the window (not just its two ends): far from the camera one pixel of jitter is many
centimetres, and the fit uses all of them to cancel it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from its_runtime.dataplane.analytics.calibration import Homography


def estimate_kmh(
    history: Sequence[tuple[float, float, float]],
    *,
    meters_per_pixel: float | None,
    width_px: int,
    height_px: int,
    homography: Homography | None = None,
    window_s: float = 1.0,
    min_span_s: float = 0.3,
) -> float | None:
    """Speed in km/h from (time, x, y) samples (normalised), newest last; None if unknown."""
    if (meters_per_pixel is None and homography is None) or len(history) < 2:
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
    if homography is not None:
        return _fitted_kmh([s for s in history if s[0] >= t0], homography)
    else:
        assert meters_per_pixel is not None
        dx = (x1 - x0) * width_px
        dy = (y1 - y0) * height_px
        metres = (dx * dx + dy * dy) ** 0.5 * meters_per_pixel
    return float(metres / span * 3.6)


def _fitted_kmh(window: Sequence[tuple[float, float, float]], homography: Homography) -> float:
    """Speed of the least-squares constant-velocity fit to the window's ground points."""
    t = np.array([s[0] for s in window])
    ground = np.array([homography.to_ground((s[1], s[2])) for s in window])
    tc = t - t.mean()
    denom = float(tc @ tc)
    vx = float(tc @ (ground[:, 0] - ground[:, 0].mean())) / denom
    vy = float(tc @ (ground[:, 1] - ground[:, 1].mean())) / denom
    return float((vx * vx + vy * vy) ** 0.5 * 3.6)
