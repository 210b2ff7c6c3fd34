"""Per-camera analytics: detections of one frame in, tracks and traffic events out.

The analyzer owns the tracker, the line counters and the region occupancy of one
camera and turns each frame's :class:`~its_runtime.detections.Detections` into a
:class:`FrameAnalysis`: small typed messages (not the tracker's mutable objects), so
the pipeline can store and cache them without reaching into analytics state.

Events are only ever emitted for confirmed tracks. A crossing made while a track was
still tentative is held back and emitted when the track is confirmed (with its own
time), so a vehicle that crosses right as it appears is still counted, and a
one-frame false positive never is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from its_runtime.config import CameraConfig
from its_runtime.dataplane.analytics import geometry, speed
from its_runtime.dataplane.analytics.counting import IntervalCounter
from its_runtime.dataplane.analytics.lines import LineCounter, LineCrossing
from its_runtime.dataplane.analytics.regions import RegionOccupancy
from its_runtime.dataplane.analytics.tracker import Track, Tracker, TrackerSettings
from its_runtime.detections import Detections

CROSSING = "crossing"
OBJECT = "object"


@dataclass(frozen=True)
class TrafficEvent:
    """A counted happening: a new object (``object``) or a line crossing (``crossing``)."""

    kind: str
    track_id: int
    class_name: str
    media_time: float
    wall_time: float
    line: str = ""
    direction: str = ""
    speed_kmh: float | None = None


@dataclass(frozen=True)
class TrackView:
    track_id: int
    class_name: str
    box: tuple[float, float, float, float]
    score: float
    speed_kmh: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "track_id": self.track_id,
            "class": self.class_name,
            "box": [round(v, 5) for v in self.box],
            "score": round(self.score, 4),
            "speed_kmh": None if self.speed_kmh is None else round(self.speed_kmh, 2),
        }


@dataclass(frozen=True)
class FrameAnalysis:
    camera: str
    seq: int
    media_time: float
    wall_time: float
    tracks: list[TrackView]
    events: list[TrafficEvent]
    occupancy: dict[str, dict[str, int]] = field(default_factory=dict)


class CameraAnalyzer:
    def __init__(
        self,
        camera: CameraConfig,
        class_names: Sequence[str],
        *,
        tracker: TrackerSettings | None = None,
        count_interval_s: float = 60.0,
    ) -> None:
        self.camera = camera
        self._class_names = list(class_names)
        self.tracker = Tracker(tracker)
        self.lines = [LineCounter(line) for line in camera.lines]
        self.regions = RegionOccupancy(camera.regions)
        self.counts = IntervalCounter(count_interval_s)
        self._pending: dict[int, list[LineCrossing]] = {}

    def class_name(self, class_id: int) -> str:
        if 0 <= class_id < len(self._class_names):
            return self._class_names[class_id]
        return str(class_id)

    def process(
        self,
        detections: Detections,
        *,
        seq: int,
        media_time: float,
        wall_time: float,
        width_px: int,
        height_px: int,
    ) -> FrameAnalysis:
        step = self.tracker.update(detections, media_time)
        events: list[TrafficEvent] = []

        def speed_of(track: Track) -> float | None:
            return speed.estimate_kmh(
                track.history,
                meters_per_pixel=self.camera.meters_per_pixel,
                width_px=width_px,
                height_px=height_px,
            )

        def wall_at(t: float) -> float:
            return wall_time - (media_time - t)

        for track in step.confirmed:
            name = self.class_name(track.class_id)
            events.append(
                TrafficEvent(
                    OBJECT, track.track_id, name, track.first_time, wall_at(track.first_time)
                )
            )
            for held in self._pending.pop(track.track_id, []):
                events.append(self._crossing_event(track, held, wall_at, speed_of(track)))

        for track in step.active + step.tentative:
            point = geometry.bottom_centre(track.box)
            for counter in self.lines:
                crossing = counter.observe(track.track_id, point, media_time)
                if crossing is None:
                    continue
                if track.confirmed:
                    events.append(self._crossing_event(track, crossing, wall_at, speed_of(track)))
                else:
                    self._pending.setdefault(track.track_id, []).append(crossing)

        for track in step.removed:
            self._pending.pop(track.track_id, None)
            for counter in self.lines:
                counter.forget(track.track_id)

        views = [
            TrackView(
                track_id=tr.track_id,
                class_name=self.class_name(tr.class_id),
                box=(float(tr.box[0]), float(tr.box[1]), float(tr.box[2]), float(tr.box[3])),
                score=tr.score,
                speed_kmh=speed_of(tr),
            )
            for tr in step.active
        ]
        occupancy = self.regions.count((geometry.bottom_centre(v.box), v.class_name) for v in views)
        for ev in events:
            self.counts.add(ev.wall_time, (ev.kind, ev.line, ev.direction, ev.class_name))
        return FrameAnalysis(
            camera=self.camera.name,
            seq=seq,
            media_time=media_time,
            wall_time=wall_time,
            tracks=views,
            events=events,
            occupancy=occupancy,
        )

    def _crossing_event(
        self,
        track: Track,
        crossing: LineCrossing,
        wall_at: Callable[[float], float],
        speed_kmh: float | None,
    ) -> TrafficEvent:
        return TrafficEvent(
            kind=CROSSING,
            track_id=track.track_id,
            class_name=self.class_name(track.class_id),
            media_time=crossing.media_time,
            wall_time=wall_at(crossing.media_time),
            line=crossing.line,
            direction=crossing.direction,
            speed_kmh=speed_kmh,
        )
