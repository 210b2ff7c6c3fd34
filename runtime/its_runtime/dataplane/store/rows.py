"""Row shapes written to PostgreSQL, and their journal encoding.

Rows are :class:`~typing.NamedTuple` s: built by keyword (``EventRow.new(camera=...,
kind=...)``), never by position, yet still plain tuples underneath, which binary COPY
takes as they are and which are the cheapest thing to build per detection. **The
fields of each row class, in order, are its table's COPY columns**; the column lists
(:data:`EVENT_COLUMNS`, :data:`DETECTION_COLUMNS`) are derived from them, so the
order is spelled once, here, next to the DDL in :mod:`.schema`. ``new`` mints the
row's idempotency key (:mod:`.keys`), ``from_journal`` reads one back, and
``as_copy_tuple`` gives what COPY wants.

Times are epoch seconds in memory and in the journal (JSON has no datetime),
converted to ``datetime`` only at COPY time. A :class:`FrameRows` groups what one
analysed frame produced, so the writer can measure frame-to-row lag when those rows
commit.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from its_runtime.dataplane.store import keys


class EventRow(NamedTuple):
    """One ``traffic_events`` row: an event or a sample of :mod:`..analytics.events`."""

    event_key: uuid.UUID
    camera: str
    ts: float
    media_time: float | None
    kind: str
    line: str
    direction: str
    class_name: str
    track_id: int
    speed_kmh: float | None
    frame_seq: int
    #: The runtime pod that analysed the frame (its POD_NAME); '' before migration 3.
    replica: str
    #: Migration 4: the lane of a crossing; the region (origin) and destination of a
    #: stop, queue or turning movement; a sample's value. ''/None before it.
    lane: str = ""
    region: str = ""
    destination: str = ""
    value: float | None = None

    @classmethod
    def new(
        cls,
        *,
        camera: str,
        ts: float,
        media_time: float | None,
        kind: str,
        line: str,
        direction: str,
        class_name: str,
        track_id: int,
        speed_kmh: float | None,
        frame_seq: int,
        replica: str = "",
        lane: str = "",
        region: str = "",
        destination: str = "",
        value: float | None = None,
    ) -> EventRow:
        """A row with a fresh idempotency key (time-prefixed by ``ts``)."""
        return cls(
            event_key=keys.new_key(ts),
            camera=camera,
            ts=ts,
            media_time=media_time,
            kind=kind,
            line=line,
            direction=direction,
            class_name=class_name,
            track_id=track_id,
            speed_kmh=speed_kmh,
            frame_seq=frame_seq,
            replica=replica,
            lane=lane,
            region=region,
            destination=destination,
            value=value,
        )

    @classmethod
    def from_journal(cls, r: Sequence[Any]) -> EventRow:
        # Records journalled before the replica column have 11 fields, before
        # migration 4's columns 12.
        return cls(
            event_key=uuid.UUID(hex=r[0]),
            camera=str(r[1]),
            ts=float(r[2]),
            media_time=None if r[3] is None else float(r[3]),
            kind=str(r[4]),
            line=str(r[5]),
            direction=str(r[6]),
            class_name=str(r[7]),
            track_id=int(r[8]),
            speed_kmh=None if r[9] is None else float(r[9]),
            frame_seq=int(r[10]),
            replica=str(r[11]) if len(r) > 11 else "",
            lane=str(r[12]) if len(r) > 12 else "",
            region=str(r[13]) if len(r) > 13 else "",
            destination=str(r[14]) if len(r) > 14 else "",
            value=None if len(r) <= 15 or r[15] is None else float(r[15]),
        )

    def as_copy_tuple(self) -> tuple[Any, ...]:
        """The row in :data:`EVENT_COLUMNS` order, ``ts`` as an aware datetime."""
        return (*self[:_EVENT_TS], to_datetime(self.ts), *self[_EVENT_TS + 1 :])


class DetectionRow(NamedTuple):
    """One ``detections`` row: a tracked box on an analysed frame."""

    det_key: uuid.UUID
    camera: str
    ts: float
    frame_seq: int
    track_id: int
    class_name: str
    score: float
    x1: float
    y1: float
    x2: float
    y2: float
    speed_kmh: float | None
    #: The runtime pod that analysed the frame; '' before migration 3.
    replica: str

    @classmethod
    def new(
        cls,
        *,
        camera: str,
        ts: float,
        frame_seq: int,
        track_id: int,
        class_name: str,
        score: float,
        box: tuple[float, float, float, float],
        speed_kmh: float | None,
        replica: str = "",
    ) -> DetectionRow:
        """A row with a fresh idempotency key; ``box`` is (x1, y1, x2, y2)."""
        x1, y1, x2, y2 = box
        return cls(
            det_key=keys.new_key(ts),
            camera=camera,
            ts=ts,
            frame_seq=frame_seq,
            track_id=track_id,
            class_name=class_name,
            score=score,
            x1=x1,
            y1=y1,
            x2=x2,
            y2=y2,
            speed_kmh=speed_kmh,
            replica=replica,
        )

    @classmethod
    def from_journal(cls, r: Sequence[Any]) -> DetectionRow:
        return cls(
            det_key=uuid.UUID(hex=r[0]),
            camera=str(r[1]),
            ts=float(r[2]),
            frame_seq=int(r[3]),
            track_id=int(r[4]),
            class_name=str(r[5]),
            score=float(r[6]),
            x1=float(r[7]),
            y1=float(r[8]),
            x2=float(r[9]),
            y2=float(r[10]),
            speed_kmh=None if r[11] is None else float(r[11]),
            replica=str(r[12]) if len(r) > 12 else "",
        )

    def as_copy_tuple(self) -> tuple[Any, ...]:
        """The row in :data:`DETECTION_COLUMNS` order, ``ts`` as an aware datetime."""
        return (*self[:_DETECTION_TS], to_datetime(self.ts), *self[_DETECTION_TS + 1 :])


#: The COPY (and merge) columns of ``traffic_events`` and ``detections``.
EVENT_COLUMNS: tuple[str, ...] = EventRow._fields
DETECTION_COLUMNS: tuple[str, ...] = DetectionRow._fields
_EVENT_TS = EVENT_COLUMNS.index("ts")
_DETECTION_TS = DETECTION_COLUMNS.index("ts")


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
                "e": [[r.event_key.hex, *r[1:]] for r in self.events],
                "d": [[r.det_key.hex, *r[1:]] for r in self.detections],
                "f": self.decoded_at,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, payload: bytes) -> RowBatch:
        data = json.loads(payload)
        return cls(
            events=[EventRow.from_journal(r) for r in data["e"]],
            detections=[DetectionRow.from_journal(r) for r in data["d"]],
            decoded_at=[float(t) for t in data["f"]],
        )


def to_datetime(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC)


def copy_records(rows: Iterable[EventRow | DetectionRow]) -> list[tuple[Any, ...]]:
    """Rows as COPY wants them, in their table's column order."""
    return [r.as_copy_tuple() for r in rows]
