"""Helpers of the ingest tests: a camera reader on a file, drained to a list."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from its_runtime.config import CameraConfig, ResizeMode
from its_runtime.dataplane.ingest.frames import Frame
from its_runtime.dataplane.ingest.reader import CameraReader
from its_runtime.dataplane.ingest.slot import LatestSlot
from its_runtime.dataplane.ingest.stats import CameraStats
from its_runtime.observability import dataplane_stats


async def read_all(
    url: str,
    *,
    size: tuple[int, int],
    resize: ResizeMode = ResizeMode.STRETCH,
    decode_mode: str = "auto",
    device_frames: Callable[[], bool] | None = None,
    observer: dataplane_stats.IngestObserver | None = None,
) -> tuple[list[Frame], CameraStats]:
    """Every frame of a file camera, decoded as fast as it goes (lossless)."""
    slot: LatestSlot[Frame] = LatestSlot(asyncio.get_running_loop(), lossless=True)
    stats = CameraStats("cam", observer)
    reader = CameraReader(
        CameraConfig(name="cam", url=url, fps=30.0),
        slot,
        stats,
        size=size,
        realtime=False,
        resize=resize,
        decode_mode=decode_mode,
        device_frames=device_frames,
    )
    reader.start()
    frames = []
    while (frame := await slot.get()) is not None:
        frames.append(frame)
    assert reader.join(5)
    return frames, stats
