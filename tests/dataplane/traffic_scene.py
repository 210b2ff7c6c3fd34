"""Vehicles driven on a ground plane in metres and filmed through a known homography.

The traffic-measure tests need truth in metres and km/h, which the pixel-space scene
generator does not have. Here each vehicle has a ground path (metres, piecewise
constant velocity, stops included); every frame its bottom-centre is projected into the
image through the inverse of a known calibration, and its box is as wide as 1.8 m at
that distance. Nothing downstream sees the ground truth: only boxes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from its_runtime.config import CameraConfig
from its_runtime.dataplane.analytics.analyzer import CameraAnalyzer, FrameAnalysis
from its_runtime.dataplane.analytics.calibration import Homography
from its_runtime.detections import Detections

#: A 10 m wide, 60 m long road seen in perspective: far end small at the top.
IMAGE_POINTS = [[0.05, 0.95], [0.95, 0.95], [0.7, 0.3], [0.3, 0.3]]
GROUND_POINTS = [[0.0, 0.0], [10.0, 0.0], [10.0, 60.0], [0.0, 60.0]]
CALIBRATION = {"imagePoints": IMAGE_POINTS, "groundPoints": GROUND_POINTS}
HOMOGRAPHY = Homography.solve(
    [(p[0], p[1]) for p in IMAGE_POINTS], [(p[0], p[1]) for p in GROUND_POINTS]
)
FPS = 30.0
WIDTH_M = 1.8


@dataclass
class Vehicle:
    """Drives from ``start`` (metres) through legs of (velocity m/s (vx, vy), seconds)."""

    start: tuple[float, float]
    legs: list[tuple[tuple[float, float], float]]
    appear_s: float = 0.0
    class_id: int = 1
    #: Kept only for the truth; the analyzer never sees it.
    label: str = field(default="")

    def position(self, t: float) -> tuple[float, float] | None:
        if t < self.appear_s:
            return None
        x, y = self.start
        left = t - self.appear_s
        for (vx, vy), duration in self.legs:
            step = min(left, duration)
            x, y = x + vx * step, y + vy * step
            left -= step
            if left <= 0:
                break
        if left > 1e-9:
            return None  # the vehicle has driven out of the scene
        if not (-1.0 <= y <= 61.0 and -1.0 <= x <= 11.0):
            return None
        return (x, y)


def kmh(ms: float) -> float:
    return ms * 3.6


def box_of(x: float, y: float) -> tuple[float, float, float, float]:
    bx, by = HOMOGRAPHY.to_image((x, y))
    lx, _ = HOMOGRAPHY.to_image((x - WIDTH_M / 2, y))
    rx, _ = HOMOGRAPHY.to_image((x + WIDTH_M / 2, y))
    w = abs(rx - lx)
    return (bx - w / 2, by - 0.9 * w, bx + w / 2, by)


def run(
    camera: CameraConfig, vehicles: list[Vehicle], seconds: float, **kw: Any
) -> list[FrameAnalysis]:
    return analyse(camera, vehicles, seconds, **kw)[1]


def analyse(
    camera: CameraConfig,
    vehicles: list[Vehicle],
    seconds: float,
    *,
    fps: float = FPS,
    jitter: float = 0.0,
    seed: int = 0,
) -> tuple[CameraAnalyzer, list[FrameAnalysis]]:
    """Analyse the scene; ``jitter`` is the boxes' noise (sigma, fraction of box width)."""
    analyzer = CameraAnalyzer(camera, ["background", "car", "truck"])
    rng = np.random.default_rng(seed)
    out: list[FrameAnalysis] = []
    for seq in range(int(seconds * fps)):
        t = seq / fps
        boxes, classes = [], []
        for v in vehicles:
            p = v.position(t)
            if p is not None:
                box = np.array(box_of(*p))
                w = box[2] - box[0]
                boxes.append(box + rng.normal(0.0, jitter * w, 4) if jitter else box)
                classes.append(v.class_id)
        dets = Detections(
            np.array(boxes, dtype=np.float32).reshape(-1, 4),
            np.full(len(boxes), 0.9, dtype=np.float32),
            np.array(classes, dtype=np.int64),
        )
        out.append(
            analyzer.process(
                dets, seq=seq, media_time=t, wall_time=1_000_000.0 + t, width_px=1280, height_px=720
            )
        )
    return analyzer, out
