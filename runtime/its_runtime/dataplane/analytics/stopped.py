"""Stopped vehicles and queues per region, from tracks' ground speeds.

A vehicle is *stopped* in a region while its bottom-centre is inside the polygon and
its ground speed stays below the region's ``stopped.speedKmh``; the clock is the
stream's, so the dwell does not depend on frame rate or dropped frames. After
``queueDwellSeconds`` it is part of the region's queue; after ``eventSeconds`` one
``stopped_vehicle`` event is raised for it (once per stop, an incident). A track that
is briefly unmatched (occluded by a passing truck) keeps its clock: only moving again,
leaving the region or the tracker giving it up resets it. A track whose speed is not
known yet (less history than the speed window needs) is not judged.

The queue length in metres is the ground distance spanned by the queued vehicles'
bottom-centres (0 for a single vehicle); it needs a calibration, vehicles do not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from its_runtime.config import Region
from its_runtime.dataplane.analytics import geometry
from its_runtime.dataplane.analytics.calibration import distance_m
from its_runtime.dataplane.analytics.geometry import Point


@dataclass(frozen=True)
class Vehicle:
    """What the stopped-vehicle and queue logic needs of a confirmed track on a frame."""

    track_id: int
    class_name: str
    point: Point
    ground: Point | None
    speed_kmh: float | None


@dataclass(frozen=True)
class Queue:
    region: str
    vehicles: int
    length_m: float | None
    stopped: tuple[int, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "vehicles": self.vehicles,
            "length_m": None if self.length_m is None else round(self.length_m, 2),
            "stopped": list(self.stopped),
        }


@dataclass
class _Stop:
    since: float
    reported: bool = False
    ground: Point | None = None


@dataclass
class RegionStops:
    """Stop clocks of the tracks inside one region."""

    region: Region
    polygon: list[Point]
    #: Ground positions are known (the camera has a calibration): lengths in metres.
    calibrated: bool
    stops: dict[int, _Stop] = field(default_factory=dict)

    @classmethod
    def of(cls, region: Region, *, calibrated: bool) -> RegionStops:
        return cls(region, [(p.x, p.y) for p in region.polygon], calibrated)

    def observe(self, vehicles: Sequence[Vehicle], t: float) -> tuple[Queue, list[Vehicle]]:
        """Update the clocks; the queue now, and the vehicles that just became incidents."""
        rule = self.region.stopped
        incidents: list[Vehicle] = []
        for v in vehicles:
            if not geometry.point_in_polygon(v.point, self.polygon):
                self.stops.pop(v.track_id, None)
                continue
            if v.speed_kmh is None:
                continue
            if v.speed_kmh >= rule.speed_kmh:
                self.stops.pop(v.track_id, None)
                continue
            stop = self.stops.setdefault(v.track_id, _Stop(since=t))
            stop.ground = v.ground
            if not stop.reported and t - stop.since >= rule.event_seconds:
                stop.reported = True
                incidents.append(v)
        queued = sorted(
            tid for tid, s in self.stops.items() if t - s.since >= rule.queue_dwell_seconds
        )
        grounds = [g for tid in queued if (g := self.stops[tid].ground) is not None]
        length: float | None = 0.0 if self.calibrated else None
        if queued and len(grounds) == len(queued):
            length = max(
                (distance_m(a, b) for i, a in enumerate(grounds) for b in grounds[i + 1 :]),
                default=0.0,
            )
        return Queue(self.region.name, len(queued), length, tuple(queued)), incidents

    def forget(self, track_id: int) -> None:
        self.stops.pop(track_id, None)
