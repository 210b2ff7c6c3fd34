"""The traffic measures of one camera beyond counting: stops, queues, movements, congestion.

:class:`TrafficMeasures` is fed the confirmed tracks of each frame (after the tracker
and the line counters) and returns the events those measures produced plus the live
picture for ``/latest``. It owns one stop clock per region (:mod:`.stopped`), the
origin-destination paths (:mod:`.od`) and the congestion meter (:mod:`.congestion`);
ground positions come from the camera's homography (:mod:`.calibration`) when it has
one. Samples (queue per region, congestion) are emitted once per ``sample_every_s`` of
stream time, on the first frame of each period, so their count per interval is the
seconds observed and their sum over that count is the interval's mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from its_runtime.config import CameraConfig
from its_runtime.dataplane.analytics import events as ev
from its_runtime.dataplane.analytics import geometry
from its_runtime.dataplane.analytics.calibration import Homography
from its_runtime.dataplane.analytics.congestion import CongestionMeter, CongestionState
from its_runtime.dataplane.analytics.od import OriginDestination
from its_runtime.dataplane.analytics.stopped import Queue, RegionStops, Vehicle
from its_runtime.observability import dataplane_stats

#: (track id, class name, box xyxy, speed km/h or None) of a confirmed track on a frame.
TrackInput = tuple[int, str, tuple[float, float, float, float], float | None]
#: (track id, class name, last media time) of a track the tracker gave up.
RemovedInput = tuple[int, str, float]


@dataclass(frozen=True)
class MeasureStep:
    events: list[ev.TrafficEvent]
    congestion: CongestionState
    queues: list[Queue] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "congestion": self.congestion.to_json(),
            "queues": {q.region: q.to_json() for q in self.queues},
        }

    def report(self, camera: str, observer: dataplane_stats.AnalyticsObserver) -> None:
        """The frame's congestion level and queues, as gauges."""
        observer.congestion(camera, self.congestion.value)
        for q in self.queues:
            observer.queue(camera, q.region, q.vehicles, q.length_m)


class TrafficMeasures:
    def __init__(
        self,
        camera: CameraConfig,
        homography: Homography | None,
        *,
        sample_every_s: float = 1.0,
    ) -> None:
        self.homography = homography
        self.regions = [
            RegionStops.of(r, calibrated=homography is not None) for r in camera.regions
        ]
        self.od = OriginDestination(camera.regions)
        self.congestion = CongestionMeter(camera.congestion)
        self._sample_every_s = sample_every_s
        self._last_period: int | None = None

    def observe(
        self,
        tracks: Sequence[TrackInput],
        removed: Sequence[RemovedInput],
        media_time: float,
        wall_at: Callable[[float], float],
    ) -> MeasureStep:
        found: list[ev.TrafficEvent] = []
        for track_id, class_name, last_time in removed:
            for stops in self.regions:
                stops.forget(track_id)
            move = self.od.finish(track_id) if self.od.enabled else None
            if move is not None:
                found.append(
                    ev.TrafficEvent(
                        ev.OD,
                        track_id,
                        class_name,
                        last_time,
                        wall_at(last_time),
                        region=move.origin,
                        destination=move.destination,
                    )
                )
        vehicles = [self._vehicle(*t) for t in tracks]
        if self.od.enabled:
            for v in vehicles:
                self.od.observe(v.track_id, v.point)
        queues: list[Queue] = []
        for stops in self.regions:
            queue, incidents = stops.observe(vehicles, media_time)
            queues.append(queue)
            for v in incidents:
                found.append(
                    ev.TrafficEvent(
                        ev.STOPPED_VEHICLE,
                        v.track_id,
                        v.class_name,
                        media_time,
                        wall_at(media_time),
                        speed_kmh=v.speed_kmh,
                        region=stops.region.name,
                        value=media_time - stops.stops[v.track_id].since,
                    )
                )
        state = self.congestion.observe(media_time, [v.speed_kmh for v in vehicles])
        period = math.floor(media_time / self._sample_every_s)
        if period != self._last_period:
            self._last_period = period
            found.extend(self._samples(state, queues, media_time, wall_at(media_time)))
        return MeasureStep(found, state, queues)

    def _vehicle(
        self,
        track_id: int,
        class_name: str,
        box: tuple[float, float, float, float],
        speed_kmh: float | None,
    ) -> Vehicle:
        point = geometry.bottom_centre(box)
        ground = None if self.homography is None else self.homography.to_ground(point)
        return Vehicle(track_id, class_name, point, ground, speed_kmh)

    def _samples(
        self, state: CongestionState, queues: Sequence[Queue], media_time: float, wall: float
    ) -> list[ev.TrafficEvent]:
        out = [
            ev.TrafficEvent(
                ev.CONGESTION, 0, state.level, media_time, wall, value=float(state.value)
            )
        ]
        for q in queues:
            out.append(
                ev.TrafficEvent(
                    ev.QUEUE, 0, "", media_time, wall, region=q.region, value=float(q.vehicles)
                )
            )
            if q.length_m is not None:
                out.append(
                    ev.TrafficEvent(
                        ev.QUEUE_M,
                        0,
                        "",
                        media_time,
                        wall,
                        region=q.region,
                        value=q.length_m,
                    )
                )
        return out
