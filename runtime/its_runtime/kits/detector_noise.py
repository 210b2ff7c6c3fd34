"""Detector noise on the true boxes of a traffic scene: what a real detector reports.

Split from :mod:`its_runtime.kits.traffic_scenes` (the scenes and their closed-form
truth): :class:`Noise` turns the true boxes of each frame into missed vehicles (in
bursts of several frames), vehicles hidden behind a nearer one, jittered boxes, false
positives, confidence scores that straddle the threshold, and frames the reader drops
(newest wins). Everything is drawn from one seeded generator, so a (scene, noise, seed)
triple is one exact, repeatable detector output.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from its_runtime.detections import Detections
from its_runtime.kits.traffic_scenes import CAR, MIN_VISIBLE, SIZES, Box, Scene


@dataclass(frozen=True)
class Noise:
    """What a real detector does to the true boxes; every knob 0 is a perfect detector."""

    #: Long-run fraction of (visible) vehicle-frames not detected.
    miss: float = 0.0
    #: Mean length, in frames, of a run of misses (1: independent misses).
    miss_burst: float = 1.0
    #: Box jitter: sigma of the centre and of the size, as a fraction of the box size.
    jitter: float = 0.0
    #: Mean false positives per frame (Poisson), car-sized boxes anywhere on the road.
    false_positives: float = 0.0
    #: Sigma of the true detections' confidence around 0.8 (0.1: some fall below 0.5).
    score_sigma: float = 0.0
    #: Fraction of frames the reader drops (newest wins), in runs of 1-3 frames.
    frame_drop: float = 0.0

    def label(self) -> str:
        parts = [
            f"miss={self.miss:g}x{self.miss_burst:g}",
            f"jitter={self.jitter:g}",
            f"fp={self.false_positives:g}",
            f"score={self.score_sigma:g}",
            f"drop={self.frame_drop:g}",
        ]
        return ",".join(parts)


#: The issue's goal: 10 % missed (in bursts), 5 % jitter, 0.5 false positives per frame.
GOAL_NOISE = Noise(miss=0.10, miss_burst=2.0, jitter=0.05, false_positives=0.5, score_sigma=0.1)


@dataclass(frozen=True)
class Frame:
    index: int
    t: float
    detections: Detections
    #: (vehicle id, class id, true box) of every vehicle present, visible or not.
    truth: list[tuple[int, int, Box]]


def detect(scene: Scene, noise: Noise, seed: int) -> Iterator[Frame]:
    """The frames a tracker gets: dropped frames left out, detections noised."""
    rng = np.random.default_rng(seed)
    missing: dict[int, bool] = {}
    start_p = _burst_start(noise.miss, noise.miss_burst)
    end_p = 1.0 / max(1.0, noise.miss_burst)
    dropping = 0
    for i, t in enumerate(scene.times()):
        truth = scene.truth_boxes(t)
        # The miss state advances on every camera frame, dropped or not.
        for vid, _, _ in truth:
            was = missing.get(vid, False)
            missing[vid] = (rng.random() >= end_p) if was else (rng.random() < start_p)
        if dropping > 0:
            dropping -= 1
            continue
        if noise.frame_drop > 0 and rng.random() < noise.frame_drop / 2.0:
            dropping = int(rng.integers(0, 3))  # this frame and 0-2 more
            continue
        visible = _visibility([b for _, _, b in truth])
        boxes: list[Box] = []
        scores: list[float] = []
        classes: list[int] = []
        for (vid, cls, box), vis in zip(truth, visible, strict=True):
            if vis < MIN_VISIBLE or missing[vid]:
                continue
            boxes.append(_jitter(box, noise.jitter, rng))
            scores.append(float(np.clip(0.8 + rng.normal(0.0, noise.score_sigma), 0.05, 0.99)))
            classes.append(cls)
        for _ in range(int(rng.poisson(noise.false_positives))):
            w, h = SIZES[CAR]
            x, y = float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.15, 1.0))
            boxes.append((x - w / 2, y - h, x + w / 2, y))
            scores.append(float(rng.uniform(0.3, 0.75)))
            classes.append(int(rng.integers(0, 2)))
        yield Frame(i, t, _detections(boxes, scores, classes), truth)


def _burst_start(miss: float, burst: float) -> float:
    """Per-frame chance of a miss run starting, so that runs of mean ``burst`` frames
    cover a ``miss`` fraction of the frames (two-state Markov chain)."""
    if miss <= 0.0:
        return 0.0
    burst = max(1.0, burst)
    return min(1.0, miss / (burst * (1.0 - miss)))


def _visibility(boxes: list[Box]) -> list[float]:
    """Fraction of each box not covered by nearer boxes (nearer: lower bottom edge)."""
    out: list[float] = []
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        area = (x2 - x1) * (y2 - y1)
        hidden = 0.0
        for j, (u1, v1, u2, v2) in enumerate(boxes):
            if j == i or v2 <= y2:
                continue
            iw = max(0.0, min(x2, u2) - max(x1, u1))
            ih = max(0.0, min(y2, v2) - max(y1, v1))
            hidden = max(hidden, iw * ih)
        out.append(1.0 - hidden / area if area > 0 else 0.0)
    return out


def _jitter(box: Box, sigma: float, rng: np.random.Generator) -> Box:
    if sigma <= 0.0:
        return box
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx = (x1 + x2) / 2 + rng.normal(0.0, sigma * w)
    cy = (y1 + y2) / 2 + rng.normal(0.0, sigma * h)
    w *= max(0.2, 1.0 + rng.normal(0.0, sigma))
    h *= max(0.2, 1.0 + rng.normal(0.0, sigma))
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def _detections(boxes: list[Box], scores: list[float], classes: list[int]) -> Detections:
    b: npt.NDArray[np.float32] = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return Detections(
        boxes=b,
        scores=np.asarray(scores, dtype=np.float32),
        classes=np.asarray(classes, dtype=np.int64),
    )
