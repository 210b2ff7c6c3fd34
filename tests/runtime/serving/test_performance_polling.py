"""Polling ``/v1/performance`` at 10 Hz does not slow the frames.

The report is built on the event loop that also runs the batcher and every
``/v1/detect`` request. It is O(window buckets x latency bins), not O(frames in the
window), so a dashboard or a benchmark polling it leaves frame latency as it was.

Measured on a real ``its-runtime`` process under a steady open-loop load well below
saturation. The load runs without a break while a poller, in alternate half-second
slices, asks for ``/v1/performance`` ten times a second (and for ``/metrics`` once a
second); every frame counts for the slice it was sent in. The client-side p99 of the
polled frames must stay within ``P99_RATIO`` x + ``P99_SLACK_MS`` of the unpolled ones,
and every poll must be answered 200 quickly.

Interleaving matters on a shared 2-core machine: a background job that slows the box
for a few seconds lands in both kinds of slice, where "a run without polling, then a
run with" read its noise (p99 from 14 to 51 ms between identical unpolled runs) as the
poller's doing. A lone stall of the box (~100 ms, seen in either kind of slice) still
moves a p99 of 400 frames, so a round that misses the bound is measured again, up to
``ROUNDS`` times. A report that blocks the loop misses it every round: at 50 ms per
report and 10 Hz half of the polled slices' time is blocked and their p99 rises by
about 50 ms (the old walk over every frame of the window cost 143 ms at 200,000
frames).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import aiohttp
import numpy as np
import pytest

from .conftest import ServeFn, Server
from .test_server import road_jpeg

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

#: Frames per second of the steady load (the quick model serves several hundred).
RATE_FPS = 50
#: Alternate slices: even ones unpolled, odd ones polled; SLICES x SLICE_S a round.
SLICE_S = 0.5
SLICES = 32
#: Rounds at most: the first within the bound passes (see the module docstring).
ROUNDS = 3
POLL_HZ = 10
#: /metrics is polled too, but less often: rendering the whole registry (~35 KB) costs
#: about 5 ms on the loop, ten times a report, and Prometheus scrapes every 15-30 s.
METRICS_HZ = 1
#: The polled p99 may be at most this much worse than the unpolled one.
P99_RATIO = 1.25
P99_SLACK_MS = 5.0
#: Each poll must be answered within this (a report costs about 0.5 ms, /metrics ~5 ms).
POLL_MAX_S = 0.25


@pytest.fixture(scope="module")
def server(serve: ServeFn) -> Server:
    """The quick CPU detector, batches up to 8, with the default 60 s window."""
    return serve(batching={"maxBatchSize": 8, "maxQueueDelayMs": 5})


#: (path, HTTP status, seconds to answer) of one poll.
Poll = tuple[str, int, float]


def _polled(t0: float, at: float) -> bool:
    return int((at - t0) / SLICE_S) % 2 == 1


async def _load(
    session: aiohttp.ClientSession, url: str, seconds: float, t0: float
) -> list[tuple[float, float]]:
    """Open-loop frames at RATE_FPS from ``t0``: (send time, latency ms) of each."""
    payload = road_jpeg()
    out: list[tuple[float, float]] = []
    statuses: list[int] = []

    async def one(at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        start = time.perf_counter()
        async with session.post(url, data=payload, headers={"Content-Type": "image/jpeg"}) as r:
            await r.read()
            statuses.append(r.status)
        out.append((start, (time.perf_counter() - start) * 1000.0))

    n = int(RATE_FPS * seconds)
    await asyncio.gather(*(one(t0 + i / RATE_FPS) for i in range(n)))
    assert statuses == [200] * n, sorted(set(statuses))
    return out


async def _poll(session: aiohttp.ClientSession, base: str, t0: float, until: float) -> list[Poll]:
    """GET /v1/performance at POLL_HZ (and /metrics at METRICS_HZ) in the polled slices."""
    polls: list[Poll] = []
    period = 1.0 / POLL_HZ
    every = round(POLL_HZ / METRICS_HZ)
    tick, i = t0, 0
    while tick < until:
        if _polled(t0, tick):
            paths = ["/v1/performance"] + (["/metrics"] if i % every == 0 else [])
            i += 1
            for path in paths:
                start = time.perf_counter()
                async with session.get(base + path) as r:
                    body = await r.read()
                    polls.append((path, r.status, time.perf_counter() - start))
                assert body
        tick += period
        await asyncio.sleep(max(0.0, tick - time.perf_counter()))
    return polls


def _p99(latencies: list[float]) -> float:
    return float(np.percentile(latencies, 99))


@dataclasses.dataclass(frozen=True)
class Round:
    quiet_p99: float
    polled_p99: float
    frames: int

    @property
    def bound(self) -> float:
        return P99_RATIO * self.quiet_p99 + P99_SLACK_MS


async def _round(session: aiohttp.ClientSession, base: str) -> tuple[Round, list[Poll]]:
    seconds = SLICES * SLICE_S
    t0 = time.perf_counter() + 0.05
    frames, polls = await asyncio.gather(
        _load(session, base + "/v1/detect?camera_id=cam-1", seconds, t0),
        _poll(session, base, t0, t0 + seconds),
    )
    quiet = [ms for at, ms in frames if not _polled(t0, at)]
    polled = [ms for at, ms in frames if _polled(t0, at)]
    return Round(_p99(quiet), _p99(polled), len(frames)), polls


async def test_polling_the_report_at_10_hz_leaves_frame_p99_unchanged(server: Server) -> None:
    rounds: list[Round] = []
    async with aiohttp.ClientSession() as s:
        await _load(s, server.url + "/v1/detect", 2.0, time.perf_counter())  # warm-up
        for _ in range(ROUNDS):
            found, polls = await _round(s, server.url)
            rounds.append(found)
            print(
                f"frame p99 ms: unpolled {found.quiet_p99:.1f}, polled {found.polled_p99:.1f} "
                f"(bound {found.bound:.1f}); {len(polls)} polls, slowest "
                f"{max(d for _, _, d in polls) * 1000:.1f} ms"
            )
            # The poller really polled at 10 Hz through every polled slice, and every
            # poll was answered, quickly.
            reports = [p for p in polls if p[0] == "/v1/performance"]
            assert len(reports) >= POLL_HZ * SLICES * SLICE_S / 2 * 0.8, len(reports)
            assert len(polls) > len(reports)
            assert {status for _, status, _ in polls} == {200}
            assert max(d for _, _, d in polls) < POLL_MAX_S, polls
            if found.polled_p99 <= found.bound:
                break
        async with s.get(server.url + "/v1/performance") as r:
            report = await r.json()
    assert rounds[-1].polled_p99 <= rounds[-1].bound, rounds
    # The report read the whole window: every frame the server answered is in it.
    assert report["frames"] >= rounds[-1].frames
