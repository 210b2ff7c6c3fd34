"""Only the compute thread runs torch's kernels in parallel (``engine.intra_op``).

With a second OpenMP team alive (the event loop's, from converting frames), GNU
OpenMP throttles its spin-wait and the forward on the compute thread ran 2-3x slower
on 2 cores. These tests run in a fresh interpreter: the rule is about a process's
first parallel op, which this test process made long ago.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import textwrap
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[3]

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys, threading
    import torch
    from its_runtime.config import BatchingConfig
    from its_runtime.detections import Detections
    from its_runtime.engine import intra_op
    from its_runtime.serving.batching import DynamicBatcher

    reserve = sys.argv[1] == "reserve"
    if reserve:
        intra_op.reserve(3)

    class Recording:
        max_batch_size, input_shape, pipeline_depth = 4, (3, 8, 8), 1
        seen = []
        def stage(self, frames):
            return torch.stack(list(frames))
        def run_batch(self, batch):
            self.seen.append((threading.current_thread().name, torch.get_num_threads()))
            torch.rand(256, 256).mul(2.0).sum()  # a parallel op on the compute thread
            return [Detections() for _ in range(batch.shape[0])]

    async def main():
        executor = Recording()
        batcher = DynamicBatcher(executor, BatchingConfig(max_batch_size=4))
        batcher.start()
        # the event loop converts frames as the cameras do
        frame = torch.randint(0, 255, (64, 64, 3), dtype=torch.uint8)
        frame.permute(2, 0, 1).to(torch.float32).div_(255.0).contiguous()
        await batcher.submit(torch.zeros(3, 8, 8))
        later = []
        t = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        t.start(); t.join()
        await batcher.close()
        return {
            "compute": executor.seen[0],
            "main": torch.get_num_threads(),
            "thread_started_later": later[0],
            "describe": intra_op.describe(),
        }

    print(json.dumps(asyncio.run(main())))
    """
)


def _fresh_python(script: str, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run ``script`` in a fresh interpreter; its last stdout line, parsed as JSON."""
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _run(mode: str) -> dict[str, object]:
    result: dict[str, object] = _fresh_python(SCRIPT, mode, env={"OMP_NUM_THREADS": "2"})
    return result


def test_after_reserve_only_the_compute_thread_runs_torch_in_parallel() -> None:
    seen = _run("reserve")
    assert seen["compute"] == ["its-batch-compute_0", 3]
    assert seen["main"] == 1  # the event loop: converting frames opens no OpenMP team
    assert seen["thread_started_later"] == 1
    described = seen["describe"]
    assert isinstance(described, dict)
    assert {k: described[k] for k in ("confined", "compute_thread", "other_threads")} == {
        "confined": True,
        "compute_thread": 3,
        "other_threads": 1,
    }
    # this script imported torch first: the spin setting is reported as too late
    assert described["openmp"] == {"GOMP_SPINCOUNT": "10000", "before_torch": False}


def test_without_reserve_torch_keeps_its_defaults_everywhere() -> None:
    seen = _run("plain")
    assert seen["compute"] == ["its-batch-compute_0", 2]
    assert seen["main"] == 2
    assert seen["thread_started_later"] == 2
    described = seen["describe"]
    assert isinstance(described, dict)
    assert (described["confined"], described["threads"]) == (False, 2)


def test_its_runtime_sets_the_openmp_spin_before_torch_loads() -> None:
    probe = (
        "import sys, its_runtime.main, json; from its_runtime import openmp_env; "
        "print(json.dumps(openmp_env.effective()))"
    )
    for env, want in (({}, "10000"), ({"GOMP_SPINCOUNT": "5"}, "5")):
        seen = _fresh_python(probe, env=env)
        assert seen == {"GOMP_SPINCOUNT": want, "before_torch": True}


def test_extra_threads_are_kept_only_where_they_make_the_forward_faster() -> None:
    from its_runtime.engine import intra_op

    assert intra_op.pick({2: 0.0097, 1: 0.0160}) == 2  # SSDlite320: 1.65x on two threads
    assert intra_op.pick({2: 0.0031, 1: 0.0025}) == 1  # a small model: slower on two
    assert intra_op.pick({2: 0.0090, 1: 0.0100}) == 1  # 1.11x does not pay for a core
    assert intra_op.pick({4: 0.004, 2: 0.006, 1: 0.010}) == 4


CHOOSE = textwrap.dedent(
    """
    import json, sys, time, threading, concurrent.futures
    import torch
    from its_runtime.engine import intra_op
    intra_op.reserve(3)
    helps = sys.argv[1] == "helps"

    def probe():  # a forward whose speed depends on this thread's count
        many = torch.get_num_threads() > 1
        time.sleep(0.004 if many == helps else 0.012)

    pool = concurrent.futures.ThreadPoolExecutor(1, initializer=intra_op.claim)
    choice = pool.submit(intra_op.choose, probe).result()
    after = pool.submit(torch.get_num_threads).result()
    later = []
    t = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    t.start(); t.join()
    print(json.dumps({"chosen": choice.threads, "after": after, "later": later[0],
                      "describe": intra_op.describe()["compute_thread"]}))
    """
)


def test_the_compute_thread_keeps_the_count_its_probe_forward_ran_fastest_with() -> None:
    for mode, want in (("helps", 3), ("hurts", 1)):
        seen = _fresh_python(CHOOSE, mode)
        # the compute thread runs at the chosen count; threads starting later stay at 1
        assert seen == {"chosen": want, "after": want, "later": 1, "describe": want}
