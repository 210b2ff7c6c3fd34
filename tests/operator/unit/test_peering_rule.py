"""The gate pauses this replica exactly when kopf's peering would."""

from __future__ import annotations

import datetime

from its_operator.handlers import leadership

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


def _peer(priority: int, seconds_ago: float, lifetime: int = 30) -> dict[str, object]:
    seen = NOW - datetime.timedelta(seconds=seconds_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


def test_newer_live_peer_pauses_us_and_dead_or_older_ones_do_not() -> None:
    status = {
        "me": _peer(100, 0),
        "newer": _peer(200, 5),
        "older": _peer(50, 1),
        "dead": _peer(300, 31),
    }
    assert leadership.blocking_peers(status, identity="me", priority=100, now=NOW) == ["newer"]
    del status["newer"]
    assert leadership.blocking_peers(status, identity="me", priority=100, now=NOW) == []


def test_same_priority_pauses_like_kopf() -> None:
    status = {"twin": _peer(100, 1)}
    assert leadership.blocking_peers(status, identity="me", priority=100, now=NOW) == ["twin"]


def test_default_priority_prefers_the_newest_process() -> None:
    a = leadership.default_priority()
    assert leadership.default_priority() >= a
