"""The fault suite, short variants: each fault costs 0 rows and recovers in bounded time.

The same scenario functions run with the issue's durations in ``benchmarks/faults.py``;
here they are shortened to stay under a minute each. Every scenario starts its own
servers, so the shared PostgreSQL and Redis are never touched.
"""

from __future__ import annotations

import pytest

from tests.faults import overload, redis_down, rtsp_restart, scenarios

#: Each starts servers (PostgreSQL, Redis, RTSP, a runtime) and runs for seconds.
pytestmark = [pytest.mark.faults, pytest.mark.services, pytest.mark.slow]


async def test_postgres_down_with_a_pod_deleted_loses_and_duplicates_no_row() -> None:
    outcome = await scenarios.postgres_down_with_pod_deletion(down_s=10)
    print(outcome.line())
    assert outcome.lost == 0
    assert outcome.duplicated == 0
    assert outcome.details["adopted_journals"] == 1  # pod A's journal, by pod B
    assert "ring-road-a" not in outcome.details["journals_left"]  # adopted, then deleted
    assert outcome.recovery_s < 15


async def test_redis_down_counts_still_answer_and_l2_comes_back() -> None:
    outcome = await redis_down.redis_down(down_s=5)
    print(outcome.line())
    assert outcome.lost == 0
    assert outcome.duplicated == 0
    assert outcome.details["answers_5xx"] == 0
    assert outcome.details["l2_degraded_during_outage"] is True
    assert outcome.recovery_s < 10


async def test_rtsp_server_restart_camera_reconnects_and_loses_no_row() -> None:
    outcome = await rtsp_restart.rtsp_restart(down_s=2)
    print(outcome.line())
    assert outcome.lost == 0
    assert outcome.duplicated == 0
    assert outcome.details["reconnects"] >= 1
    assert outcome.recovery_s < 15


async def test_overload_at_three_times_capacity_sheds_without_500_and_memory_stays_bounded() -> (
    None
):
    outcome = await overload.overload(seconds=8)
    print(outcome.line())
    assert outcome.lost == 0  # every request answered 200, 429 or 503
    assert outcome.details["answers_500"] == 0
    assert outcome.details["server_alive"] is True
    statuses = outcome.details["statuses"]
    assert isinstance(statuses, dict)
    assert statuses.get("429", 0) + statuses.get("503", 0) > 0  # it shed, it did not queue
    rss_start, rss_max = outcome.details["rss_mb_start"], outcome.details["rss_mb_max"]
    assert isinstance(rss_start, float)
    assert isinstance(rss_max, float)
    assert rss_max < rss_start + 300
    assert outcome.recovery_s < 10
