"""The fault suite's data faults, short variants: a full journal volume during a
PostgreSQL outage, a Redis Cluster master killed, corrupt H.264 from an RTSP camera.

Like ``test_faults.py``: the scenario functions (``journal_disk_full``,
``redis_cluster_down``, ``corrupt_rtsp``) run here with short durations and in
``benchmarks/faults.py`` with the issue's; each starts its own servers, so the shared
PostgreSQL and Redis are never touched.
"""

from __future__ import annotations

import pytest

from tests.faults import corrupt_rtsp, journal_disk_full, redis_cluster_down

#: Each starts servers (PostgreSQL, Redis, RTSP, a runtime) and runs for seconds.
pytestmark = [pytest.mark.faults, pytest.mark.services, pytest.mark.slow]


@pytest.mark.parametrize("how", ["auto", "rlimit"])
async def test_postgres_down_and_journal_disk_full_loses_no_row_silently(how: str) -> None:
    outcome = await journal_disk_full.journal_disk_full(full_s=2, how=how)
    print(outcome.line())
    d = outcome.details
    assert outcome.lost == 0  # every row stored, or counted as dropped for the full disk
    assert outcome.duplicated == 0
    dropped = d["rows_dropped_disk_full"]
    assert isinstance(dropped, int)
    assert dropped > 0  # the full volume really cost rows...
    assert d["frames_missing"] * journal_disk_full.ROWS_PER_FRAME == dropped  # ...these
    assert d["dropped_metric"] == dropped  # its_journal_dropped_rows_total says so too
    assert d["rows_dropped_other"] == {}
    # /ready said why while it happened: database away, journal unwritable, the count.
    ready = d["ready_while_full"]
    assert isinstance(ready, str)
    assert d["ready_while_full_healthy"] is False
    assert ready.startswith("failing: the database is unreachable"), ready
    assert ("No space left on device" in ready) or ("File too large" in ready), ready
    assert f"{d['dropped_when_sampled']} rows lost" in ready
    # Space back: journalling again; PostgreSQL back: every journalled row replayed.
    assert d["space_noticed"] is True
    assert str(d["ready_after_space_returned"]).startswith("degraded, journalling")
    journalled_after = d["journalled_after_space_returned"]
    assert isinstance(journalled_after, int)
    assert journalled_after > 0
    assert d["rows_replayed"] == d["rows_journalled"]
    assert d["ready_after"] == "ok"
    assert outcome.recovery_s < 15


async def test_a_redis_cluster_master_killed_counts_stay_right_and_l2_comes_back() -> None:
    outcome = await redis_cluster_down.redis_cluster_node_down(down_s=4)
    print(outcome.line())
    d = outcome.details
    assert outcome.lost == 0
    assert outcome.duplicated == 0
    assert d["answers_5xx"] == 0
    assert d["answers_not_http"] == 0
    assert d["answers_wrong_counts"] == 0  # every answer equals PostgreSQL's crossings
    crossings = d["crossings_expected"]
    assert isinstance(crossings, int)
    assert crossings > 0
    assert d["cluster_state_while_down"] == "fail"
    assert d["l2_degraded_during_outage"] is True
    assert d["l2_error_first"]  # degraded with its cause (shown in /ready's redis entry)
    assert d["l2_after"] == "ok"
    phases = d["answers_by_phase"]
    assert isinstance(phases, dict)
    assert phases["before"].get("l2", 0) > 0  # served from the cluster...
    assert phases["down"].get("miss", 0) > 0  # ...from PostgreSQL while it was down...
    assert phases["after"].get("l2", 0) > 0  # ...and from the cluster again
    assert outcome.recovery_s < 10


async def test_corrupt_rtsp_segments_are_skipped_and_analysis_resumes_losing_no_row() -> None:
    outcome = await corrupt_rtsp.corrupt_rtsp(corrupt_s=2)
    print(outcome.line())
    d = outcome.details
    assert outcome.lost == 0
    assert outcome.duplicated == 0
    skipped = d["corrupt_frames_skipped"]
    assert isinstance(skipped, int)
    assert d["corrupt_segments"] == 1
    assert d["corrupt_segments_metric"] == 1  # its_ingest_corrupt_segments_total
    assert skipped >= 2 * 30  # the 2 s of damage at 30 fps, up to the next key frame
    assert d["frames_analysed_in_corruption"] == 0  # no garbage reached the tracker
    assert d["pipeline_alive"] is True
    assert d["analysing"] is True
    assert d["analysis_errors"] == 0
    assert d["reconnects"] == 0  # the connection survived the garbage
    crossings = d["crossings_analysed"]
    assert isinstance(crossings, int)
    assert crossings > 0
    assert 0 <= outcome.recovery_s < 3
