"""The cameras benchmark's search: the rules that decide the README's cameras-per-replica.

Tested with the step replaced by a scripted one, so the rules (turn-taking, the warm-up
step, the one retry) are checked exactly, not inferred from a noisy run.
"""

from __future__ import annotations

import asyncio
import pathlib
import types
from collections.abc import Callable
from typing import Any

import pytest

from tests import bench_modules

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> types.ModuleType:
    return bench_modules.load("cameras.py", "cameras_bench")


def _ctx(bench: types.ModuleType, *, retries: bool = True, warm_up: bool = True) -> Any:
    return bench.Context(
        dsn=None,
        redis_url=None,
        source="file",
        deadline=None,
        seconds=1.0,
        warmup_s=0.0,
        video_s=1.0,
        decode="auto",
        decode_exposed=True,
        decode_costs={},
        videos={},
        retries=retries,
        warm_up_step=warm_up,
    )


def _scripted(
    log: list[tuple[str, int]], passes: Callable[[str, int, int], bool]
) -> Callable[..., Any]:
    """A run_step that logs (approach, N) and passes by ``passes(approach, N, attempt)``."""
    attempts: dict[tuple[str, int], int] = {}

    async def run_step(ctx: Any, det: Any, approach: str, resolution: str, n: int) -> Any:
        attempt = attempts.get((approach, n), 0)
        attempts[approach, n] = attempt + 1
        log.append((approach, n))
        await asyncio.sleep(0)  # a real step yields to the event loop many times
        return {
            "approach": approach,
            "detector": "colourbox",
            "resolution": resolution,
            "cameras": n,
            "pass": passes(approach, n, attempt),
            "latency_ms": {"p50": 1.0, "p99": 2.0},
            "drop_pct": 0.0,
            "fps_analysed": 30.0 * n,
            "batches": {"mean_size": 1.0},
            "cpu": {"cores_per_camera": 0.1},
            "counts": None,
            "step_s": 0.0,
        }

    return run_step


async def _both(bench: types.ModuleType, ctx: Any, limits: dict[str, int]) -> Any:
    turn = asyncio.Lock()
    return await asyncio.gather(*(bench.search(ctx, None, a, "960x544", 8, turn) for a in limits))


def test_the_two_sides_steps_alternate_and_a_warm_up_step_comes_first(
    bench: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    log: list[tuple[str, int]] = []
    limits = {"ours": 4, "seed_loop": 2}
    monkeypatch.setattr(bench, "run_step", _scripted(log, lambda a, n, _: n <= limits[a]))
    (ours, ours_runs), (seed, seed_runs) = asyncio.run(
        _both(bench, _ctx(bench, retries=False), limits)
    )
    assert (ours, seed) == (4, 2)
    # warm-ups, then the sides take turns while both search
    assert log[:6] == [
        ("ours", 1),
        ("seed_loop", 1),
        ("ours", 1),
        ("seed_loop", 1),
        ("ours", 2),
        ("seed_loop", 2),
    ]
    seed_steps = [i for i, (a, _) in enumerate(log) if a == "seed_loop"]
    ours_steps = [i for i, (a, _) in enumerate(log) if a == "ours"]
    for i, j in zip(ours_steps, seed_steps, strict=False):
        assert abs(i - j) == 1  # no side runs twice in a row while the other still searches
    assert [r.get("warmup", False) for r in ours_runs][:2] == [True, False]
    assert sum(bool(r.get("warmup")) for r in seed_runs) == 1


def test_a_warm_up_step_that_fails_does_not_end_the_search(
    bench: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    log: list[tuple[str, int]] = []
    # the first step of all fails (the cold start), every later N <= 3 passes
    monkeypatch.setattr(bench, "run_step", _scripted(log, lambda a, n, k: n <= 3 and len(log) > 1))
    ((best, runs),) = asyncio.run(_both(bench, _ctx(bench, retries=False), {"ours": 3}))
    assert best == 3
    assert runs[0]["warmup"]
    assert not runs[0]["pass"]


def test_a_failing_step_is_run_once_more_and_passes_if_the_rerun_passes(
    bench: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    log: list[tuple[str, int]] = []
    # N=2's first run stalls; N=4 always fails
    monkeypatch.setattr(
        bench, "run_step", _scripted(log, lambda a, n, k: n == 1 or (n == 2 and k > 0))
    )
    ((best, runs),) = asyncio.run(_both(bench, _ctx(bench, warm_up=False), {"ours": 2}))
    assert best == 2
    assert log == [
        ("ours", 1),
        ("ours", 2),
        ("ours", 2),
        ("ours", 4),
        ("ours", 4),
        ("ours", 3),
        ("ours", 3),
    ]
    assert [bool(r.get("retry")) for r in runs] == [False, False, True, False, True, False, True]
    # once more, and no more: a step that fails twice fails
    assert [r["pass"] for r in runs if r["cameras"] == 4] == [False, False]
    decided = {r["cameras"]: r for r in bench.deciding(runs)}
    assert decided[2]["pass"]
    assert decided[2]["retry"]
    assert not decided[4]["pass"]


def test_without_retries_one_failing_step_ends_the_search(
    bench: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    log: list[tuple[str, int]] = []
    monkeypatch.setattr(
        bench, "run_step", _scripted(log, lambda a, n, k: n == 1 or (n == 2 and k > 0))
    )
    ((best, _),) = asyncio.run(_both(bench, _ctx(bench, warm_up=False, retries=False), {"ours": 2}))
    assert best == 1
    assert log == [("ours", 1), ("ours", 2)]


def test_warm_up_steps_are_left_out_of_what_decides(bench: types.ModuleType) -> None:
    base = {"detector": "d", "resolution": "r", "approach": "ours"}
    runs = [
        {**base, "cameras": 1, "pass": False, "warmup": True},
        {**base, "cameras": 1, "pass": True},
        {**base, "cameras": 2, "pass": True},
        {**base, "cameras": 2, "pass": False, "retry": True},
    ]
    decided = bench.deciding(runs)
    assert [(r["cameras"], r["pass"]) for r in decided] == [(1, True), (2, True)]
    assert not any(r.get("warmup") for r in decided)
