"""Row shapes written to PostgreSQL, and their journal encoding.

Rows are plain tuples in column order (binary COPY takes tuples, and tuples are the
cheapest thing to build per detection). Times are epoch seconds in memory and in the
journal (JSON has no datetime), converted to ``datetime`` only at COPY time.
A :class:`FrameRows` groups what one analysed frame produced, so the writer can
measure frame-to-row lag when those rows commit.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

EVENT_COLUMNS: tuple[str, ...] = (
    "event_key",
    "camera",
    "ts",
    "media_time",
    "kind",
    "line",
    "direction",
    "class_name",
    "track_id",
    "speed_kmh",
    "frame_seq",
)
DETECTION_COLUMNS: tuple[str, ...] = (
    "det_key",
    "camera",
    "ts",
    "frame_seq",
    "track_id",
    "class_name",
    "score",
    "x1",
    "y1",
    "x2",
    "y2",
    "speed_kmh",
)
#: Position of ``ts`` in both row shapes.
TS_INDEX = 2

#: (event_key, camera, ts, media_time, kind, line, direction, class_name, track_id,
#:  speed_kmh, frame_seq)
EventRow = tuple[uuid.UUID, str, float, float | None, str, str, str, str, int, float | None, int]
#: (det_key, camera, ts, frame_seq, track_id, class_name, score, x1, y1, x2, y2, speed_kmh)
DetectionRow = tuple[
    uuid.UUID, str, float, int, int, str, float, float, float, float, float, float | None
]


@dataclass
class FrameRows:
    """Rows one analysed frame produced; ``decoded_at`` is the frame's decode time."""

    decoded_at: float
    events: list[EventRow] = field(default_factory=list)
    detections: list[DetectionRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.events) + len(self.detections)


@dataclass
class RowBatch:
    """Rows written in one transaction (several frames' worth)."""

    events: list[EventRow] = field(default_factory=list)
    detections: list[DetectionRow] = field(default_factory=list)
    #: Decode times of the frames the rows came from (for the lag metric).
    decoded_at: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.events) + len(self.detections)

    def add(self, rows: FrameRows) -> None:
        self.events.extend(rows.events)
        self.detections.extend(rows.detections)
        self.decoded_at.append(rows.decoded_at)

    @classmethod
    def of(cls, frames: Iterable[FrameRows]) -> RowBatch:
        batch = cls()
        for rows in frames:
            batch.add(rows)
        return batch

    def encode(self) -> bytes:
        """Compact JSON for the journal (keys as hex, times as epoch seconds)."""
        return json.dumps(
            {
                "e": [[r[0].hex, *r[1:]] for r in self.events],
                "d": [[r[0].hex, *r[1:]] for r in self.detections],
                "f": self.decoded_at,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, payload: bytes) -> RowBatch:
        data = json.loads(payload)
        return cls(
            events=[_event(r) for r in data["e"]],
            detections=[_detection(r) for r in data["d"]],
            decoded_at=[float(t) for t in data["f"]],
        )


def _event(r: Sequence[Any]) -> EventRow:
    return (
        uuid.UUID(hex=r[0]),
        str(r[1]),
        float(r[2]),
        None if r[3] is None else float(r[3]),
        str(r[4]),
        str(r[5]),
        str(r[6]),
        str(r[7]),
        int(r[8]),
        None if r[9] is None else float(r[9]),
        int(r[10]),
    )


def _detection(r: Sequence[Any]) -> DetectionRow:
    return (
        uuid.UUID(hex=r[0]),
        str(r[1]),
        float(r[2]),
        int(r[3]),
        int(r[4]),
        str(r[5]),
        float(r[6]),
        float(r[7]),
        float(r[8]),
        float(r[9]),
        float(r[10]),
        None if r[11] is None else float(r[11]),
    )


def to_datetime(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC)


def with_datetime(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows as COPY wants them: ``ts`` as an aware datetime."""
    return [(*r[:TS_INDEX], to_datetime(r[TS_INDEX]), *r[TS_INDEX + 1 :]) for r in rows]
