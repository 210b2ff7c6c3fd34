"""Replays a noisy traffic scene through the real analyzer and scores its counts.

One (scene, noise, seed, tracker) run: the frames of :func:`detector_noise.detect` go
through :class:`~its_runtime.dataplane.analytics.analyzer.CameraAnalyzer` exactly as a
camera's detections do (tracker, line counters, regions), and the crossings it emits
are compared with the scene's closed-form truth. The per-frame confirmed tracks are
kept, with the true boxes, for the tracking metrics (HOTA, MOTA, IDF1) that
``benchmarks/accuracy.py`` computes with the ``trackers`` library's evaluation code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from its_runtime.dataplane.analytics import analyzer, geometry
from its_runtime.dataplane.analytics.tracker import TrackerSettings
from its_runtime.kits import detector_noise, traffic_scenes
from its_runtime.kits.detector_noise import Noise
from its_runtime.kits.traffic_scenes import CountKey, Scene

Boxes = npt.NDArray[np.float64]


@dataclass
class FrameTracks:
    t: float
    truth_ids: npt.NDArray[np.int64]
    truth_boxes: Boxes
    track_ids: npt.NDArray[np.int64]
    track_boxes: Boxes
    #: (bottom-centre, class id) of every confirmed track, for other counters.
    track_classes: npt.NDArray[np.int64]


@dataclass
class Replay:
    scene: str
    truth: dict[CountKey, int]
    counted: dict[CountKey, int]
    occupancy_true: int = 0
    occupancy_abs_error: int = 0
    frames: list[FrameTracks] = field(default_factory=list)
    cpu_s: float = 0.0

    def count_errors(self) -> dict[CountKey, float]:
        """|counted - true| / true for every (line, direction, class) in truth or counted."""
        keys = sorted(set(self.truth) | set(self.counted))
        return {
            k: traffic_scenes.relative_error(self.counted.get(k, 0), self.truth.get(k, 0))
            for k in keys
        }

    def max_count_error(self) -> float:
        """Worst over (line, direction): per-class errors of small classes are too coarse
        (one truck in three is 33 %), so the goal is judged on line and direction."""
        by_dir_true: dict[tuple[str, str], int] = {}
        by_dir_counted: dict[tuple[str, str], int] = {}
        for (line, d, _), n in self.truth.items():
            by_dir_true[(line, d)] = by_dir_true.get((line, d), 0) + n
        for (line, d, _), n in self.counted.items():
            by_dir_counted[(line, d)] = by_dir_counted.get((line, d), 0) + n
        keys = set(by_dir_true) | set(by_dir_counted)
        return max(
            (
                traffic_scenes.relative_error(by_dir_counted.get(k, 0), by_dir_true.get(k, 0))
                for k in keys
            ),
            default=0.0,
        )

    def occupancy_error(self) -> float:
        return self.occupancy_abs_error / max(1, self.occupancy_true)


def replay(
    scene: Scene,
    noise: Noise,
    seed: int,
    settings: TrackerSettings,
    *,
    keep_frames: bool = False,
) -> Replay:
    import time

    cam = scene.camera()
    an = analyzer.CameraAnalyzer(cam, traffic_scenes.CLASS_NAMES, tracker=settings)
    polygons = {r.name: [(p.x, p.y) for p in r.polygon] for r in scene.regions}
    out = Replay(scene.name, traffic_scenes.true_counts(scene), {})
    cpu = 0.0
    for frame in detector_noise.detect(scene, noise, seed):
        began = time.process_time()
        result = an.process(
            frame.detections,
            seq=frame.index,
            media_time=frame.t,
            wall_time=1_000_000.0 + frame.t,
            width_px=1280,
            height_px=720,
        )
        cpu += time.process_time() - began
        for ev in result.events:
            if ev.kind == analyzer.CROSSING:
                key = (ev.line, ev.direction, ev.class_name)
                out.counted[key] = out.counted.get(key, 0) + 1
        if polygons:
            seen = sum(sum(per_class.values()) for per_class in result.occupancy.values())

            def inside(name: str, x: float, y: float) -> bool:
                return geometry.point_in_polygon((x, y), polygons[name])

            truly = traffic_scenes.true_occupancy(scene, frame.t, inside)
            out.occupancy_true += truly
            out.occupancy_abs_error += abs(seen - truly)
        if keep_frames:
            names = list(traffic_scenes.CLASS_NAMES)
            out.frames.append(
                FrameTracks(
                    t=frame.t,
                    truth_ids=np.asarray([v for v, _, _ in frame.truth], dtype=np.int64),
                    truth_boxes=np.asarray(
                        [b for _, _, b in frame.truth], dtype=np.float64
                    ).reshape(-1, 4),
                    track_ids=np.asarray([tr.track_id for tr in result.tracks], dtype=np.int64),
                    track_boxes=np.asarray(
                        [tr.box for tr in result.tracks], dtype=np.float64
                    ).reshape(-1, 4),
                    track_classes=np.asarray(
                        [names.index(tr.class_name) for tr in result.tracks], dtype=np.int64
                    ),
                )
            )
    out.cpu_s = cpu
    return out
