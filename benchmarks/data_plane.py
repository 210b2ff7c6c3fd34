"""Data-plane benchmark: write paths, cache levels, and frame-to-row lag under load.

Three measurements, each against the real servers the tests use (``its_devenv``'s
PostgreSQL and Redis on loopback, started if not running):

1. **Writes to PostgreSQL**, rows/s, for detection rows of the real schema:
   the runtime's path (binary COPY into a staging table + idempotent merge, batches of
   ``batchMaxRows``), plain binary COPY straight into the table (the ceiling, but not
   idempotent), ``executemany`` INSERT in one transaction, and row-by-row autocommit
   INSERT (the naive path).
2. **Cache reads**, latency percentiles of one key: L1 (in-process LRU) vs L2 (Redis,
   one round trip), plus L2 pipelined reads of 32 keys per round trip (per key).
3. **Frame-to-row lag with 8 cameras at 30 FPS**: 8 generated H.264 traffic videos
   decoded in real time by PyAV, batched by the real ``DynamicBatcher`` into the
   hand-weighted torch detector, tracked, counted and written through the runtime's
   writer. Lag is measured from the moment a frame leaves the decoder to the commit
   of its rows (the writer's clock), and cross-checked from PostgreSQL itself
   (``written_at - ts`` of the detection rows). Run at the default flush interval
   (0.5 s) and at 0.1 s, because the flush interval dominates the lag by design.

Writes ``benchmarks/results/data_plane.json``. ``--quick`` shortens every step (for a
smoke run, not for numbers).

Usage: ``python benchmarks/data_plane.py [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import platform
import statistics
import tempfile
import time
import uuid
from typing import Any

import asyncpg
import numpy as np
import torch

from its_devenv import services as devservices
from its_runtime.config import (
    BatchingConfig,
    CacheConfig,
    CameraConfig,
    CountingLine,
    DatabaseConfig,
    ModelConfig,
    Point,
    RuntimeConfig,
)
from its_runtime.dataplane.cache.l1 import L1Cache
from its_runtime.dataplane.cache.l2 import RedisL2
from its_runtime.dataplane.plane import DataPlane
from its_runtime.dataplane.store import bulk, rows
from its_runtime.dataplane.store.database import Database
from its_runtime.kits import synth
from its_runtime.kits.synth_detector import ColourBoxDetector
from its_runtime.serving.batching import DynamicBatcher

ROOT = pathlib.Path(__file__).resolve().parent
INPUT_SHAPE = (3, 96, 160)


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q)) if samples else float("nan")


def detection_rows(n: int) -> rows.RowBatch:
    now = time.time()
    batch = rows.RowBatch()
    for i in range(n):
        ts = now + i / 1000
        batch.detections.append(
            rows.DetectionRow.new(
                camera="bench",
                ts=ts,
                frame_seq=i,
                track_id=i % 7,
                class_name="car",
                score=0.9,
                box=(0.1, 0.2, 0.3, 0.4),
                speed_kmh=42.0,
            )
        )
    return batch


# -- 1. writes ------------------------------------------------------------------------------


async def bench_writes(dsn: str, quick: bool) -> dict[str, Any]:
    config = DatabaseConfig(batch_max_rows=2000, pool_min_size=1, pool_max_size=2)
    db = Database(dsn, config)
    await db.connect()
    total = 10_000 if quick else 60_000
    naive_total = 1_000 if quick else 5_000
    out: dict[str, Any] = {"batch_rows": config.batch_max_rows}
    try:
        async with db.acquire() as conn:

            async def timed(name: str, n: int, run: Any) -> None:
                await conn.execute("TRUNCATE detections")
                start = time.perf_counter()
                await run()
                elapsed = time.perf_counter() - start
                stored = await conn.fetchval("SELECT count(*) FROM detections")
                assert stored == n, (name, stored, n)
                out[name] = {
                    "rows": n,
                    "seconds": round(elapsed, 3),
                    "rows_per_s": round(n / elapsed),
                }

            batches = [detection_rows(config.batch_max_rows) for _ in range(total // 2000)]

            async def copy_merge() -> None:
                for b in batches:
                    await bulk.write_batch(conn, b)

            async def copy_plain() -> None:
                for b in batches:
                    await conn.copy_records_to_table(
                        "detections",
                        records=rows.copy_records(b.detections),
                        columns=rows.DETECTION_COLUMNS,
                    )

            naive = detection_rows(naive_total)

            async def executemany() -> None:
                cols = ", ".join(rows.DETECTION_COLUMNS)
                marks = ", ".join(f"${i + 1}" for i in range(len(rows.DETECTION_COLUMNS)))
                async with conn.transaction():
                    await conn.executemany(
                        f"INSERT INTO detections ({cols}) VALUES ({marks})",
                        rows.copy_records(naive.detections),
                    )

            async def one_by_one() -> None:
                await bulk.insert_rows_one_by_one(conn, naive)

            await timed("copy_merge_idempotent", total, copy_merge)
            batches = [detection_rows(config.batch_max_rows) for _ in range(total // 2000)]
            await timed("copy_plain", total, copy_plain)
            await timed("executemany_one_transaction", naive_total, executemany)
            naive = detection_rows(naive_total)
            await timed("insert_row_by_row_autocommit", naive_total, one_by_one)
            await conn.execute("TRUNCATE detections")
    finally:
        await db.close()
    out["speedup_copy_merge_vs_row_by_row"] = round(
        out["copy_merge_idempotent"]["rows_per_s"]
        / out["insert_row_by_row_autocommit"]["rows_per_s"],
        1,
    )
    return out


# -- 2. cache ---------------------------------------------------------------------------------


async def bench_cache(redis_url: str, quick: bool) -> dict[str, Any]:
    n = 2_000 if quick else 20_000
    value = os.urandom(2048)  # about the size of a camera's latest-view JSON
    l1 = L1Cache(10_000, 60.0)
    l2 = RedisL2(redis_url)
    keys_ = [f"bench:{i}" for i in range(256)]
    try:
        await l2.set_many(dict.fromkeys(keys_, value), 60.0)
        for k in keys_:
            l1.set(k, value)
        l1_lat: list[float] = []
        for i in range(n):
            start = time.perf_counter()
            l1.get(keys_[i % 256])
            l1_lat.append(time.perf_counter() - start)
        l2_lat: list[float] = []
        for i in range(n):
            start = time.perf_counter()
            await l2.get_many([keys_[i % 256]])
            l2_lat.append(time.perf_counter() - start)
        batch_lat: list[float] = []
        for i in range(n // 32):
            chunk = [keys_[(i * 32 + j) % 256] for j in range(32)]
            start = time.perf_counter()
            await l2.get_many(chunk)
            batch_lat.append((time.perf_counter() - start) / 32)
    finally:
        await l2.close()

    def summary(lat: list[float]) -> dict[str, float]:
        return {
            "p50_us": round(pct(lat, 50) * 1e6, 2),
            "p99_us": round(pct(lat, 99) * 1e6, 2),
            "mean_us": round(statistics.fmean(lat) * 1e6, 2),
        }

    return {
        "value_bytes": len(value),
        "lookups": n,
        "l1_get": summary(l1_lat),
        "l2_get_one_round_trip": summary(l2_lat),
        "l2_get_pipelined_32_per_key": summary(batch_lat),
    }


# -- 3. frame-to-row lag -----------------------------------------------------------------------


async def bench_lag(
    dsn: str, redis_url: str, videos: list[pathlib.Path], seconds: float, flush_s: float
) -> dict[str, Any]:
    line = CountingLine(name="mid", start=Point(x=0.5, y=1.0), end=Point(x=0.5, y=0.0))
    with tempfile.TemporaryDirectory() as journal:
        config = RuntimeConfig(
            model=ModelConfig(
                path="/models/colour-boxes.pt2",
                input_shape=list(INPUT_SHAPE),
                batching=BatchingConfig(max_batch_size=8, opt_batch_size=8, max_queue_delay_ms=2),
            ),
            cameras=[
                CameraConfig(
                    name=f"cam-{i}", url=v.as_uri(), fps=30, lines=[line], meters_per_pixel=0.05
                )
                for i, v in enumerate(videos)
            ],
            database=DatabaseConfig(dsn_env="DSN", journal_dir=journal, flush_interval_s=flush_s),
            cache=CacheConfig(redis_url_env="REDIS"),
        )
        detector = ColourBoxDetector(INPUT_SHAPE)
        batcher = DynamicBatcher(detector, config.model.batching)
        batcher.start()
        plane = DataPlane(config, batcher, env={"DSN": dsn, "REDIS": redis_url})
        cpu0 = time.process_time()
        await plane.start()
        start = time.monotonic()
        await asyncio.sleep(seconds)
        await plane.stop_cameras()
        elapsed = time.monotonic() - start
        cpu = time.process_time() - cpu0
        assert plane.writer is not None
        await plane.writer.flush()
        lags = list(plane.writer.recent_lags)
        cams = {n: p.stats.snapshot() for n, p in plane.pipelines.items()}
        writer = plane.writer.details()
        await plane.stop()
        await batcher.close()
    conn = await asyncpg.connect(dsn)
    try:
        db_lag = await conn.fetchrow(
            """
            SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag) AS p50,
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY lag) AS p99,
                   max(lag) AS max, count(*) AS n
            FROM (SELECT extract(epoch FROM written_at - ts) AS lag FROM detections) l
            """
        )
        events = await conn.fetchval("SELECT count(*) FROM traffic_events")
        await conn.execute("TRUNCATE detections, traffic_events, interval_counts")
    finally:
        await conn.close()
    decoded = sum(c["frames_decoded"] for c in cams.values())
    analysed = sum(c["frames_analysed"] for c in cams.values())
    dropped: dict[str, int] = {}
    for c in cams.values():
        for reason, k in c["frames_dropped"].items():
            dropped[reason] = dropped.get(reason, 0) + k
    assert db_lag is not None
    return {
        "cameras": len(videos),
        "camera_fps": 30,
        "seconds": round(elapsed, 2),
        "flush_interval_s": flush_s,
        "frames_decoded": decoded,
        "frames_analysed": analysed,
        "frames_dropped": dropped,
        "analysed_fps_total": round(analysed / elapsed, 1),
        "process_cpu_cores_used": round(cpu / elapsed, 2),
        "frame_to_row_lag_ms": {
            "frames": len(lags),
            "p50": round(pct(lags, 50) * 1000, 1),
            "p99": round(pct(lags, 99) * 1000, 1),
            "max": round(max(lags) * 1000, 1) if lags else None,
        },
        "frame_to_row_lag_ms_from_postgres": {
            "rows": db_lag["n"],
            "p50": round(float(db_lag["p50"] or 0) * 1000, 1),
            "p99": round(float(db_lag["p99"] or 0) * 1000, 1),
            "max": round(float(db_lag["max"] or 0) * 1000, 1),
        },
        "events_written": events,
        "rows_written": writer["rows_written"],
        "rows_spooled": writer["rows_spooled"],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    args = parser.parse_args()
    svc, _ = devservices.up(quiet=True)
    name = f"bench_{uuid.uuid4().hex[:8]}"
    dsn = svc.create_database(name)
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "postgres": "loopback, fsync=off, synchronous_commit=off (its_devenv settings)",
            "redis": "loopback, standalone",
        },
        "quick": args.quick,
    }
    try:
        print("writes ...", flush=True)
        results["writes"] = await bench_writes(dsn, args.quick)
        print(json.dumps(results["writes"], indent=1), flush=True)
        print("cache ...", flush=True)
        results["cache"] = await bench_cache(svc.redis_url, args.quick)
        print(json.dumps(results["cache"], indent=1), flush=True)
        seconds = 6.0 if args.quick else 20.0
        with tempfile.TemporaryDirectory() as tmp:
            videos = []
            for i in range(8):
                scene = synth.two_lane_scene(seconds + 10, every_s=1.6 + 0.1 * i, first_s=0.1 * i)
                videos.append(synth.encode_h264(scene, pathlib.Path(tmp) / f"cam{i}.ts"))
            results["lag"] = []
            for flush_s in (0.5, 0.1):
                print(f"8 cameras, flush {flush_s}s ...", flush=True)
                run = await bench_lag(dsn, svc.redis_url, videos, seconds, flush_s)
                print(json.dumps(run, indent=1), flush=True)
                results["lag"].append(run)
    finally:
        svc.drop_database(name)
    out = ROOT / "results" / "data_plane.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main())
