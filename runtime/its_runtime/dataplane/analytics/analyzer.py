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

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from its_runtime.config import CameraConfig
from its_runtime.dataplane.analytics import calibration, geometry, measures, speed, tracking
from its_runtime.dataplane.analytics.counting import IntervalCounter
from its_runtime.dataplane.analytics.events import CROSSING as CROSSING
from its_runtime.dataplane.analytics.events import OBJECT as OBJECT
from its_runtime.dataplane.analytics.events import WRONG_WAY
from its_runtime.dataplane.analytics.events import TrafficEvent as TrafficEvent
from its_runtime.dataplane.analytics.lines import LineCounter, LineCrossing
from its_runtime.dataplane.analytics.regions import RegionOccupancy
from its_runtime.dataplane.analytics.tracker import Track, TrackerSettings
from its_runtime.detections import Detections

#: Crossing hysteresis as a fraction of the box height: a box's bottom edge jitters by
#: a few percent of its height, so a vehicle halted on a line must move this far past
#: it before it counts (benchmarks/accuracy.py: the queue and stop-and-go scenes).
CROSSING_BAND = 0.35


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
    #: Congestion and queues of this frame (``to_json`` is what /latest shows).
    traffic: measures.MeasureStep | None = None


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
        self.tracker = tracking.build(tracker)
        self.lines = [LineCounter(line) for line in camera.lines]
        self.regions = RegionOccupancy(camera.regions)
        self.counts = IntervalCounter(count_interval_s)
        self.homography = calibration.of_camera(camera)
        self.measures = measures.TrafficMeasures(camera, self.homography)
        self._pending: dict[int, list[LineCrossing]] = {}
        #: Confirmed tracks still alive (their crossings are settled by ``finish``).
        self._live: dict[int, Track] = {}

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
                homography=self.homography,
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
                events.extend(self._crossing_events(track, held, wall_at, speed_of(track)))

        for track in step.active + step.tentative:
            point = geometry.bottom_centre(track.box)
            for counter in self.lines:
                band = CROSSING_BAND * float(track.box[3] - track.box[1])
                crossing = counter.observe(track.track_id, point, media_time, band=band)
                if crossing is None:
                    continue
                if track.confirmed:
                    events.extend(self._crossing_events(track, crossing, wall_at, speed_of(track)))
                else:
                    self._pending.setdefault(track.track_id, []).append(crossing)

        self._live.update((tr.track_id, tr) for tr in step.active if tr.confirmed)
        for track in step.removed:
            self._live.pop(track.track_id, None)
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
        found = self.measures.observe(
            [(v.track_id, v.class_name, v.box, v.speed_kmh) for v in views],
            [(tr.track_id, self.class_name(tr.class_id), tr.last_time) for tr in step.removed],
            media_time,
            wall_at,
        )
        events.extend(found.events)
        for ev in events:
            if not ev.is_sample:
                self.counts.add(ev.wall_time, self.counts.key_of(ev))
        return FrameAnalysis(
            camera=self.camera.name,
            seq=seq,
            media_time=media_time,
            wall_time=wall_time,
            tracks=views,
            events=events,
            occupancy=occupancy,
            traffic=found,
        )

    def finish(self, *, seq: int, media_time: float, wall_time: float) -> FrameAnalysis:
        """The end of the stream: crossings that only the band still held back.

        A vehicle that crossed a line in the last frames of a finite stream (a file, a
        recording) has not yet moved a band's width past it; no later frame will take
        it further, so its crossing counts now, at its interpolated time.
        """
        events: list[TrafficEvent] = []
        for track in self._live.values():
            for counter in self.lines:
                crossing = counter.settle(track.track_id)
                if crossing is not None:
                    events.extend(
                        self._crossing_events(
                            track, crossing, lambda t: wall_time - (media_time - t), None
                        )
                    )
        for ev in events:
            self.counts.add(ev.wall_time, self.counts.key_of(ev))
        return FrameAnalysis(
            camera=self.camera.name,
            seq=seq,
            media_time=media_time,
            wall_time=wall_time,
            tracks=[],
            events=events,
        )

    def _crossing_events(
        self,
        track: Track,
        crossing: LineCrossing,
        wall_at: Callable[[float], float],
        speed_kmh: float | None,
    ) -> list[TrafficEvent]:
        """The crossing, and a ``wrong_way`` event with it when it went against the lane."""
        event = TrafficEvent(
            kind=CROSSING,
            track_id=track.track_id,
            class_name=self.class_name(track.class_id),
            media_time=crossing.media_time,
            wall_time=wall_at(crossing.media_time),
            line=crossing.line,
            direction=crossing.direction,
            speed_kmh=speed_kmh,
            lane=crossing.lane,
        )
        return (
            [event, dataclasses.replace(event, kind=WRONG_WAY)] if crossing.wrong_way else [event]
        )
