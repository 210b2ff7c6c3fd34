"""The rows one analysed frame produces, built by the rows' named constructors.

Kept apart from the camera pipeline (which calls it for every frame and once more at
the end of a finite stream) so the tests and the fault suite can build the same rows
without a pipeline.
"""

from __future__ import annotations

from its_runtime.dataplane.analytics import analyzer
from its_runtime.dataplane.store import rows


def frame_rows(
    result: analyzer.FrameAnalysis, decoded_at: float, *, detections: bool, replica: str = ""
) -> rows.FrameRows:
    """The rows one analysed frame produces: its events, and its boxes if stored."""
    events = [
        rows.EventRow.new(
            camera=result.camera,
            ts=ev.wall_time,
            media_time=ev.media_time,
            kind=ev.kind,
            line=ev.line,
            direction=ev.direction,
            class_name=ev.class_name,
            track_id=ev.track_id,
            speed_kmh=ev.speed_kmh,
            frame_seq=result.seq,
            replica=replica,
            lane=ev.lane,
            region=ev.region,
            destination=ev.destination,
            value=ev.value,
        )
        for ev in result.events
    ]
    boxes = (
        [
            rows.DetectionRow.new(
                camera=result.camera,
                ts=result.wall_time,
                frame_seq=result.seq,
                track_id=t.track_id,
                class_name=t.class_name,
                score=t.score,
                box=t.box,
                speed_kmh=t.speed_kmh,
                replica=replica,
            )
            for t in result.tracks
        ]
        if detections
        else []
    )
    return rows.FrameRows(decoded_at, events, boxes)
