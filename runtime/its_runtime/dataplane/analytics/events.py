"""Traffic events: the typed messages analytics emits, one kind per thing a user counts.

Events are what the store writes (one ``traffic_events`` row each, aggregated per
interval) and what ``/latest`` shows. Besides happenings (an object, a crossing, a
wrong-way crossing, a stopped vehicle, a turning movement) there are *samples*: once
a second per camera the congestion level, and per region the queue, as events with a
``value``. Storing states as regular samples lets the same COPY path and the same
interval aggregates (count, sum, max) answer "average queue length per 5 minutes" or
"seconds congested per hour" without a second table or write path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OBJECT = "object"
CROSSING = "crossing"
WRONG_WAY = "wrong_way"
STOPPED_VEHICLE = "stopped_vehicle"
#: A turning movement: ``region`` is the origin, ``destination`` the exit region.
OD = "od"
#: Samples: queued vehicles in ``region``; its length in metres; the congestion level.
QUEUE = "queue"
QUEUE_M = "queue_m"
CONGESTION = "congestion"
SAMPLE_KINDS = frozenset({QUEUE, QUEUE_M, CONGESTION})
#: Events that are neither objects nor crossings (their own metric counts them).
INCIDENT_KINDS = frozenset({WRONG_WAY, STOPPED_VEHICLE, OD})


@dataclass(frozen=True)
class TrafficEvent:
    """A counted happening, or a sample of a state (``kind`` in :data:`SAMPLE_KINDS`)."""

    kind: str
    track_id: int
    class_name: str
    media_time: float
    wall_time: float
    line: str = ""
    direction: str = ""
    speed_kmh: float | None = None
    lane: str = ""
    region: str = ""
    destination: str = ""
    #: The sample's value (vehicles, metres, level index) or a stop's duration (s).
    value: float | None = None

    @property
    def is_sample(self) -> bool:
        return self.kind in SAMPLE_KINDS

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "ts": self.wall_time,
            "media_time": round(self.media_time, 4),
            "line": self.line,
            "direction": self.direction,
            "class": self.class_name,
            "track_id": self.track_id,
            "speed_kmh": None if self.speed_kmh is None else round(self.speed_kmh, 2),
        }
        for key, value in (
            ("lane", self.lane),
            ("region", self.region),
            ("destination", self.destination),
        ):
            if value:
                out[key] = value
        if self.value is not None:
            out["value"] = round(self.value, 3)
        return out
