"""The serving benchmark's accounting: what counts as throughput, latency and error.

These numbers are what the README quotes against the issue's goals, so their rules are
tested on hand-made request records, not taken on trust from a run.
"""

from __future__ import annotations

import math
import pathlib
import types
from typing import Any

import numpy as np
import pytest

from tests import bench_modules

ROOT = pathlib.Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def bench() -> types.ModuleType:
    return bench_modules.load("serving.py", "serving_bench")


def _run(
    bench: types.ModuleType, window: tuple[float, float], samples: list[tuple[float, float, str]]
) -> Any:
    recs = [bench.Sample(start, end, status) for start, end, status in samples]
    return bench.Run("closed", 4, window, recs)


def test_answers_to_warm_up_requests_count_as_throughput_not_as_latency(
    bench: types.ModuleType,
) -> None:
    # Window 10..20 s. A closed loop's requests sent in the warm-up and answered in the
    # window are work done in the window; their latencies are not the window's.
    run = _run(
        bench,
        (10.0, 20.0),
        [
            (9.0, 11.0, "200"),  # sent in the warm-up, answered inside: counts as throughput
            (8.0, 9.5, "200"),  # all in the warm-up: nothing
            (12.0, 12.05, "200"),
            (13.0, 13.2, "200"),
            (14.0, 14.1, "429"),  # an error inside the window
            (19.0, 21.0, "200"),  # sent inside, answered after: late, not throughput
            (19.5, math.inf, "unfinished"),
        ],
    )
    row = run.summary()
    assert row["fps"] == pytest.approx(3 / 10.0)  # 11.0, 12.05 and 13.2
    assert row["ok"] == 3
    assert row["goodput_fps"] == pytest.approx(1 / 10.0)  # only the 50 ms answer is <= 100 ms
    assert row["errors"] == {"429": 1}
    assert row["error_rate"] == pytest.approx(1 / 4)
    # p50 over requests sent in the window and answered in it: 50 ms and 200 ms.
    assert row["p50_ms"] == pytest.approx(125.0)
    assert (row["late"], row["unfinished"], row["in_flight_at_end"]) == (1, 1, 2)
    # Every request sent in the window, the unfinished one at the client timeout.
    assert row["p99_all_ms"] == pytest.approx(float(np.percentile([50, 200, 100, 2000, 30000], 99)))


def test_several_windows_sum_their_seconds_and_pool_their_latencies(
    bench: types.ModuleType,
) -> None:
    first = _run(bench, (0.0, 2.0), [(0.5, 0.51, "200"), (1.0, 1.03, "200")])
    second = _run(bench, (10.0, 14.0), [(10.5, 10.59, "200")])
    row = bench.summarise_windows([first, second])
    assert row["seconds"] == pytest.approx(6.0)
    assert row["fps"] == pytest.approx(3 / 6.0)
    assert row["windows"] == 2
    assert row["p50_ms"] == pytest.approx(30.0)
    assert [w["fps"] for w in row["by_window"]] == pytest.approx([1.0, 0.25])


def test_the_pair_alternates_so_steady_drift_favours_neither(bench: types.ModuleType) -> None:
    order = bench.abba(("ours", "naive"), 2)
    assert order == ["ours", "naive", "naive", "ours"] * 2
    # On a machine getting faster by one unit per window, each server's mean window
    # speed is the same: a drift cannot make either look faster.
    speed = {name: [i for i, n in enumerate(order) if n == name] for name in ("ours", "naive")}
    assert sum(speed["ours"]) == sum(speed["naive"])


def test_an_alternating_client_counts_each_server_at_its_own_time(bench: types.ModuleType) -> None:
    # One client alternating between servers: a server answering in 30 ms gets
    # 1 / 30 ms of throughput even though the client spent half its time elsewhere.
    window = (0.0, 1.2)
    fast = [(0.06 * k, 0.06 * k + 0.03, "200") for k in range(20)]  # 0.00-0.03, 0.06-...
    run = bench.Run("closed", 1, window, [bench.Sample(*f) for f in fast], alternating=True)
    row = bench.summarise_windows([run])
    assert row["seconds"] == pytest.approx(0.6)
    assert row["fps"] == pytest.approx(1 / 0.03)
    halves = bench.split_window(run, 2)
    assert [h.window for h in halves] == [(0.0, 0.6), (0.6, 1.2)]
    assert bench.summarise_windows(halves)["fps"] == pytest.approx(row["fps"])
