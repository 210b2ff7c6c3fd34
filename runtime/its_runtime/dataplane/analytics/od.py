"""Origin-destination (turning movement) counts between a camera's regions.

At a junction the regions are the approaches: a track's *origin* is the first region
its bottom-centre was seen in, its *destination* the last one. The movement is
counted once, when the tracker gives the track up (it has left the picture), and only
when origin and destination differ: a vehicle seen in one region only has not made a
movement this camera can name. Overlapping regions resolve to the first in config
order, so a point is in at most one approach.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from its_runtime.config import Region
from its_runtime.dataplane.analytics import geometry
from its_runtime.dataplane.analytics.geometry import Point


@dataclass(frozen=True)
class Movement:
    track_id: int
    origin: str
    destination: str


@dataclass
class _Path:
    origin: str
    last: str


class OriginDestination:
    def __init__(self, regions: Iterable[Region]) -> None:
        self._polygons = [(r.name, [(p.x, p.y) for p in r.polygon]) for r in regions]
        self._paths: dict[int, _Path] = {}

    @property
    def enabled(self) -> bool:
        """Movements need at least two regions."""
        return len(self._polygons) >= 2

    def region_of(self, point: Point) -> str | None:
        for name, polygon in self._polygons:
            if geometry.point_in_polygon(point, polygon):
                return name
        return None

    def observe(self, track_id: int, point: Point) -> None:
        region = self.region_of(point)
        if region is None:
            return
        path = self._paths.get(track_id)
        if path is None:
            self._paths[track_id] = _Path(region, region)
        else:
            path.last = region

    def finish(self, track_id: int) -> Movement | None:
        """The track is gone: its movement, if it made one."""
        path = self._paths.pop(track_id, None)
        if path is None or path.origin == path.last:
            return None
        return Movement(track_id, path.origin, path.last)
