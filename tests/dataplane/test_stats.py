"""Data-plane components report to the observer they are given, not to global metrics."""

from __future__ import annotations

import datetime

from its_runtime.dataplane.cache.l1 import L1Cache
from its_runtime.dataplane.cache.tiered import TieredCache
from its_runtime.dataplane.ingest.stats import CameraStats
from its_runtime.dataplane.store import rows


class Recorder:
    """Every observer method, recorded as (name, *args)."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def __getattr__(self, name: str) -> object:
        def record(*args: object) -> None:
            self.calls.append((name, *args))

        return record


async def test_the_cache_reports_lookups_latencies_and_evictions_to_its_observer() -> None:
    observer = Recorder()
    cache = TieredCache(L1Cache(1, 5.0, observer=observer))  # type: ignore[arg-type]
    await cache.set("a", b"1")
    await cache.set("b", b"2")  # evicts "a"
    assert (await cache.get("a")).level is None
    assert (await cache.get("b")).level == "l1"
    assert ("l1_evicted", "capacity") in observer.calls
    assert [c for c in observer.calls if c[0] == "cache_lookup"] == [
        ("cache_lookup", "l1", "miss"),
        ("cache_lookup", "l1", "hit"),
    ]
    assert {c[:3] for c in observer.calls if c[0] == "cache_latency"} == {
        ("cache_latency", "l1", "set"),
        ("cache_latency", "l1", "get"),
    }


def test_camera_stats_report_to_their_observer() -> None:
    observer = Recorder()
    stats = CameraStats("cam", observer)  # type: ignore[arg-type]
    stats.on_connected()
    stats.on_connected()
    stats.on_dropped("behind", 2)
    assert observer.calls == [
        ("stream_connected", "cam", False),
        ("stream_connected", "cam", True),
        ("stream_reconnected", "cam"),
        ("stream_connected", "cam", True),
        ("frames_dropped", "cam", "behind", 2),
    ]
    assert stats.snapshot()["frames_dropped"] == {"behind": 2}


def test_rows_are_built_by_name_and_copied_in_their_column_order() -> None:
    row = rows.DetectionRow.new(
        camera="cam",
        ts=0.0,
        frame_seq=3,
        track_id=7,
        class_name="car",
        score=0.5,
        box=(0.1, 0.2, 0.3, 0.4),
        speed_kmh=None,
    )
    copied = dict(zip(rows.DETECTION_COLUMNS, row.as_copy_tuple(), strict=True))
    assert copied["ts"] == datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    assert (copied["x1"], copied["y2"], copied["frame_seq"]) == (0.1, 0.4, 3)
    batch = rows.RowBatch.of([rows.FrameRows(0.0, [], [row])])
    assert rows.RowBatch.decode(batch.encode()).detections == [row]
