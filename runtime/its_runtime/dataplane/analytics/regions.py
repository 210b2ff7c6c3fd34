"""Region occupancy: how many tracked objects stand inside each configured polygon.

Occupancy is a state, not an event, so it is computed afresh per frame from the
confirmed tracks' bottom-centres; it needs no per-track memory and cannot drift.
"""

from __future__ import annotations

from collections.abc import Iterable

from its_runtime.config import Region
from its_runtime.dataplane.analytics import geometry
from its_runtime.dataplane.analytics.geometry import Point


class RegionOccupancy:
    def __init__(self, regions: Iterable[Region]) -> None:
        self._polygons: dict[str, list[Point]] = {
            r.name: [(p.x, p.y) for p in r.polygon] for r in regions
        }

    @property
    def names(self) -> list[str]:
        return list(self._polygons)

    def count(self, objects: Iterable[tuple[Point, str]]) -> dict[str, dict[str, int]]:
        """{region: {class name: objects inside}} for (bottom-centre, class name) pairs."""
        out: dict[str, dict[str, int]] = {name: {} for name in self._polygons}
        for point, class_name in objects:
            for name, polygon in self._polygons.items():
                if geometry.point_in_polygon(point, polygon):
                    out[name][class_name] = out[name].get(class_name, 0) + 1
        return out
