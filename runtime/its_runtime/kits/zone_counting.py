"""supervision's ``LineZone`` / ``PolygonZone`` counting the same tracks as ours.

Issue 13 asks for the counters too to come from a maintained library unless ours wins
on the accuracy benchmark. To compare the counters alone, both read the *same*
confirmed tracks of one replay (:class:`~its_runtime.kits.traffic_replay.FrameTracks`,
the default tracker's output): ours already counted them inside the analyzer;
here supervision's zones count them again, in pixels of a 1280x720 frame, and the
counts are scored against the scene's closed-form truth exactly as ours are.

Direction: supervision names its sides by its own cross-product convention; which of
its ``in``/``out`` is our ``in`` (negative to positive side of start->end, see
:mod:`~its_runtime.dataplane.analytics.geometry`) is found per line by letting both
judge one synthetic crossing, not assumed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import supervision as sv

from its_runtime.config import CountingLine
from its_runtime.dataplane.analytics import analyzer, geometry, lines, regions
from its_runtime.kits import traffic_scenes
from its_runtime.kits.traffic_replay import FrameTracks
from its_runtime.kits.traffic_scenes import CountKey, Scene

WIDTH, HEIGHT = 1280, 720
_SCALE = np.asarray([WIDTH, HEIGHT, WIDTH, HEIGHT], dtype=np.float64)


@dataclass(frozen=True)
class LineZoneVariant:
    """One way of configuring ``LineZone``: its anchors and crossing threshold."""

    name: str
    anchors: tuple[sv.Position, ...]
    minimum_crossing_threshold: int = 1


VARIANTS = (
    # The library's defaults: all four corners must pass, one frame on the new side.
    LineZoneVariant(
        "linezone_default",
        (
            sv.Position.TOP_LEFT,
            sv.Position.TOP_RIGHT,
            sv.Position.BOTTOM_LEFT,
            sv.Position.BOTTOM_RIGHT,
        ),
    ),
    # Tuned for traffic: the ground point (as ours and the truth use), 3 frames to confirm.
    LineZoneVariant("linezone_bottom_centre_t3", (sv.Position.BOTTOM_CENTER,), 3),
)


def _pixel(p: tuple[float, float]) -> sv.Point:
    return sv.Point(x=p[0] * WIDTH, y=p[1] * HEIGHT)


def _detections(boxes: np.ndarray, ids: np.ndarray, classes: np.ndarray) -> sv.Detections:
    if len(ids) == 0:
        return sv.Detections.empty()
    return sv.Detections(
        xyxy=boxes.reshape(-1, 4) * _SCALE,
        tracker_id=ids.astype(int),
        class_id=classes.astype(int),
    )


def _our_direction_of_library_in(line: CountingLine, variant: LineZoneVariant) -> str:
    """Which of our directions a crossing is that LineZone counts as its ``in``."""
    a, b = (line.start.x, line.start.y), (line.end.x, line.end.y)
    mid = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
    nx, ny = -(b[1] - a[1]), b[0] - a[0]  # a normal of start->end
    norm = (nx * nx + ny * ny) ** 0.5
    step = 0.2 / norm
    p0, p1 = (mid[0] - nx * step, mid[1] - ny * step), (mid[0] + nx * step, mid[1] + ny * step)
    ours = lines.LineCounter(line)
    zone = sv.LineZone(
        start=_pixel(a),
        end=_pixel(b),
        triggering_anchors=(sv.Position.BOTTOM_CENTER,),
        minimum_crossing_threshold=1,
    )
    ours_dir = ""
    for i, p in enumerate((p0, p0, p1, p1)):
        crossing = ours.observe(1, p, float(i))
        if crossing is not None:
            ours_dir = crossing.direction
        box = np.asarray([[p[0] - 0.01, p[1] - 0.02, p[0] + 0.01, p[1]]])
        zone.trigger(_detections(box, np.asarray([1]), np.asarray([0])))
    if not ours_dir or zone.in_count + zone.out_count != 1:
        raise RuntimeError(f"calibration crossing of line {line.name} was not seen by both")
    return ours_dir if zone.in_count == 1 else (lines.OUT if ours_dir == lines.IN else lines.IN)


@dataclass
class ZoneCounts:
    counted: dict[CountKey, int]
    occupancy_true: int
    occupancy_abs_error: int
    cpu_s: float

    def occupancy_error(self) -> float:
        return self.occupancy_abs_error / max(1, self.occupancy_true)


def count(scene: Scene, frames: Sequence[FrameTracks], variant: LineZoneVariant) -> ZoneCounts:
    """supervision's zones over one replay's tracks: line counts and region occupancy."""
    names = traffic_scenes.CLASS_NAMES
    zones = {
        line.name: sv.LineZone(
            start=_pixel((line.start.x, line.start.y)),
            end=_pixel((line.end.x, line.end.y)),
            triggering_anchors=variant.anchors,
            minimum_crossing_threshold=variant.minimum_crossing_threshold,
        )
        for line in scene.lines
    }
    library_in = {line.name: _our_direction_of_library_in(line, variant) for line in scene.lines}
    polygons = {
        r.name: sv.PolygonZone(
            polygon=np.asarray([[p.x * WIDTH, p.y * HEIGHT] for p in r.polygon], dtype=int),
            triggering_anchors=(sv.Position.BOTTOM_CENTER,),
        )
        for r in scene.regions
    }
    normalised = {r.name: [(p.x, p.y) for p in r.polygon] for r in scene.regions}

    def inside(name: str, x: float, y: float) -> bool:
        return geometry.point_in_polygon((x, y), normalised[name])

    occ_true = occ_err = 0
    cpu = 0.0
    for f in frames:
        began = time.process_time()
        dets = _detections(f.track_boxes, f.track_ids, f.track_classes)
        for zone in zones.values():
            zone.trigger(dets)
        seen = sum(int(np.count_nonzero(z.trigger(dets))) for z in polygons.values())
        cpu += time.process_time() - began
        if polygons:
            truly = traffic_scenes.true_occupancy(scene, f.t, inside)
            occ_true += truly
            occ_err += abs(seen - truly)
    counted: dict[CountKey, int] = {}
    for name, zone in zones.items():
        into, out_of = library_in[name], lines.OUT if library_in[name] == lines.IN else lines.IN
        for direction, per_class in (
            (into, zone.in_count_per_class),
            (out_of, zone.out_count_per_class),
        ):
            for class_id, n in per_class.items():
                if n:
                    key = (name, direction, names[int(class_id or 0)])
                    counted[key] = counted.get(key, 0) + n
    return ZoneCounts(counted, occ_true, occ_err, cpu)


def ours_cpu_s(scene: Scene, frames: Sequence[FrameTracks]) -> float:
    """CPU seconds our counters (lines with the analyzer's band, regions) take for the
    same tracks: the like-for-like cost beside :func:`count`'s."""
    counters = [lines.LineCounter(line) for line in scene.lines]
    occupancy = regions.RegionOccupancy(scene.regions)
    names = traffic_scenes.CLASS_NAMES
    began = time.process_time()
    for f in frames:
        points = []
        for track_id, box, class_id in zip(
            f.track_ids, f.track_boxes, f.track_classes, strict=True
        ):
            point = geometry.bottom_centre(box)
            points.append((point, names[int(class_id)]))
            band = analyzer.CROSSING_BAND * float(box[3] - box[1])
            for counter in counters:
                counter.observe(int(track_id), point, f.t, band=band)
        occupancy.count(points)
    return time.process_time() - began
