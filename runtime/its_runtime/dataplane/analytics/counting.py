"""Counts per class per interval, kept in memory for the live view of one camera.

PostgreSQL holds the durable per-interval aggregates (see ``its_runtime.dataplane.store``);
this is the running picture that ``/latest`` shows without a query: the current and
a few recent intervals, aligned to wall-clock multiples of the interval (so every
camera and replica agrees on where an interval starts).
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Any, Protocol

#: (kind, line, lane, direction, region, destination, class name); kind is an event kind
#: of :mod:`.events` (samples are not counted), unused parts are ''.
CountKey = tuple[str, str, str, str, str, str, str]


class _Keyed(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def line(self) -> str: ...
    @property
    def lane(self) -> str: ...
    @property
    def direction(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def destination(self) -> str: ...
    @property
    def class_name(self) -> str: ...


@dataclass(frozen=True)
class IntervalCount:
    start: float
    counts: dict[CountKey, int]


class IntervalCounter:
    def __init__(self, interval_s: float = 60.0, keep: int = 15) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.interval_s = interval_s
        self._buckets: collections.OrderedDict[float, dict[CountKey, int]] = (
            collections.OrderedDict()
        )
        self._keep = keep
        self.totals: dict[CountKey, int] = {}

    def bucket_of(self, wall_time: float) -> float:
        return math.floor(wall_time / self.interval_s) * self.interval_s

    @staticmethod
    def key_of(event: _Keyed) -> CountKey:
        return (
            event.kind,
            event.line,
            event.lane,
            event.direction,
            event.region,
            event.destination,
            event.class_name,
        )

    def add(self, wall_time: float, key: CountKey, n: int = 1) -> None:
        start = self.bucket_of(wall_time)
        bucket = self._buckets.get(start)
        if bucket is None:
            bucket = self._buckets[start] = {}
            self._buckets = collections.OrderedDict(sorted(self._buckets.items()))
            while len(self._buckets) > self._keep:
                self._buckets.popitem(last=False)
        bucket[key] = bucket.get(key, 0) + n
        self.totals[key] = self.totals.get(key, 0) + n

    def recent(self) -> list[IntervalCount]:
        return [IntervalCount(start, dict(c)) for start, c in self._buckets.items()]

    def to_json(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s,
            "totals": _rows(self.totals),
            "intervals": [{"start": b.start, "counts": _rows(b.counts)} for b in self.recent()],
        }


def _rows(counts: dict[CountKey, int]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for (kind, line, lane, direction, region, destination, c), n in sorted(counts.items()):
        row: dict[str, Any] = {"kind": kind, "line": line, "direction": direction, "class": c}
        for name, value in (("lane", lane), ("region", region), ("destination", destination)):
            if value:
                row[name] = value
        row["count"] = n
        out.append(row)
    return out
