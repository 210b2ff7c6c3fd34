"""Torch's intra-op threads belong to the compute thread; every other thread runs torch
single-threaded.

The model runs on the batcher's compute thread (``its-batch-compute``), but torch runs
elsewhere too: the event loop converts camera frames to tensors, the decode pool
prepares HTTP images, camera readers may touch tensors. Torch's CPU kernels use
OpenMP, and GNU OpenMP gives **every thread that opens a parallel region its own team
of worker threads**, kept for the thread's life. With the event loop's team and the
compute thread's team alive on 2 cores, libgomp counts more managed threads than CPUs
and throttles its spin-wait (1,000 spins instead of 300,000): between the forward's
hundreds of small parallel regions the workers now sleep on a futex and must be woken,
so the forward slows down though the CPU is half idle. Measured here (SSDlite320,
AOTInductor, batch 1, 2 cores): 8.5-10.7 ms on the thread that owns the only team,
21-28 ms on the compute thread once the main thread had a team too, 12.0 ms with this
module's rule, with the event loop and another thread converting frames meanwhile. The
camera benchmark's ``compute`` stage was 22-25 ms at batch 1 before it.

The rule: :func:`reserve` runs first thing in the process, on the main thread (before
torch's first parallel op opens a team there): it remembers the count the compute
thread will use (torch's own, i.e. ``OMP_NUM_THREADS`` or the cores) and sets the
process default to 1 (the main thread's own count included). The compute pool's
initializer, :func:`claim`, gives its thread the reserved count. A thread that starts
using torch later begins at the default, 1, so it never opens a team.

``torch.set_num_threads`` sets both the calling thread's count and the default that
threads starting later begin with (``at::init_num_threads`` on a thread's first parallel
op), so :func:`claim` first fixes its own thread's count (its lazy initialisation
happens now, not after), then puts the default back to 1 from a short-lived thread.
Without :func:`reserve` (a library user, the tests) nothing changes: torch's defaults
everywhere.

After warm-up, :func:`choose` times one forward of a lone frame with the reserved count
and with 1, each after a pause as between camera frames, and keeps the extra threads
only if they make it at least :data:`MIN_SPEEDUP` faster: the colour-box detector
(96x160) gains nothing from a second thread, whose spin and wake-ups cost 0.49 core per
1080p camera against 0.25 on one; SSDlite320 runs about 1.6x faster on two. ``/ready``
(``torch_threads``) shows the choice and the timings.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import threading
import time
from collections.abc import Callable

import torch

from its_runtime import openmp_env

log = logging.getLogger(__name__)

_reserved: int | None = None
_lock = threading.Lock()


def reserve(threads: int | None = None) -> int:
    """On the main thread, before torch's first parallel op: keep ``threads`` (default:
    torch's current count) for the compute thread, 1 for every other. Idempotent."""
    global _reserved
    with _lock:
        if _reserved is None:
            _reserved = max(1, threads or torch.get_num_threads())
            torch.set_num_threads(1)
        return _reserved


def reserved() -> int | None:
    """The compute thread's count, or None when :func:`reserve` was not called."""
    return _reserved


def claim() -> int:
    """The compute thread's first act: its torch ops get the reserved count."""
    count = _reserved
    if count is None:
        return int(torch.get_num_threads())
    torch.get_num_threads()  # this thread's lazy initialisation, now, at the default
    _use(count)
    log.info(
        "torch intra-op threads: %d on %s, 1 elsewhere", count, threading.current_thread().name
    )
    return count


#: The extra threads must make the forward at least this much faster to be kept: they
#: cost up to their number times the CPU, which the camera decoders need.
MIN_SPEEDUP = 1.25


@dataclasses.dataclass(frozen=True)
class Choice:
    threads: int
    #: Median seconds of one probe forward, by thread count.
    seconds: dict[int, float]


_choice: Choice | None = None


def pick(seconds: dict[int, float], min_speedup: float = MIN_SPEEDUP) -> int:
    """The thread count to keep: the most threads whose forward beats one thread's by
    ``min_speedup`` (else 1)."""
    single = seconds[1]
    faster = [n for n, t in seconds.items() if n > 1 and t * min_speedup <= single]
    return max(faster, default=1)


def choose(probe: Callable[[], object], repeats: int = 7) -> Choice:
    """On the compute thread, after warm-up: time ``probe`` (one forward) with the
    reserved count and with 1, keep the count :func:`pick` says. A small model's
    forward (the colour-box detector's: 96x160) gains nothing from a second thread and
    pays its spin-wait in CPU; SSDlite320's runs 1.65x faster on two."""
    global _choice
    count = _reserved
    if count is None or count == 1:
        return Choice(int(torch.get_num_threads()), {})
    seconds = {n: _median_time(probe, n, repeats) for n in (count, 1)}
    winner = pick(seconds)
    _use(winner)
    _choice = Choice(winner, seconds)
    log.info(
        "torch intra-op threads on the compute thread: %d (probe forward %s)",
        winner,
        ", ".join(f"{n} threads {t * 1000:.1f} ms" for n, t in sorted(seconds.items())),
    )
    return _choice


#: The pause before each timed probe forward: a 30 fps camera's frame interval, so the
#: team's threads (and an idle vCPU) have gone to sleep, as between camera frames.
#: Timed back to back, a hot team made the colour-box forward look faster on two
#: threads (0.98 vs 1.45 ms; 5 ms pauses still 1.1-1.6 vs 1.1-1.8 ms); after 33 ms
#: pauses it took 2.3-2.9 ms on two against 2.5 on one, while SSDlite320 took 11.6-13.4
#: ms on two against 18.2-21.5 on one.
PAUSE_S = 0.033


def _median_time(probe: Callable[[], object], count: int, repeats: int) -> float:
    _use(count)
    probe()  # the first call at a new count pays the team's start
    times = []
    for _ in range(repeats):
        time.sleep(PAUSE_S)
        start = time.perf_counter()
        probe()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _use(count: int) -> None:
    torch.set_num_threads(count)
    _set_default(1)


def _set_default(count: int) -> None:
    """The default for threads that start using torch later, without touching this
    thread's own count (``torch.set_num_threads`` sets both, so a short-lived thread
    calls it)."""
    setter = threading.Thread(target=torch.set_num_threads, args=(count,), name="its-threads")
    setter.start()
    setter.join()


def describe() -> dict[str, object]:
    """For ``/ready``: who runs torch's parallel kernels."""
    openmp = openmp_env.effective()
    if _reserved is None:
        return {"confined": False, "threads": int(torch.get_num_threads()), "openmp": openmp}
    chosen = _choice.threads if _choice is not None else _reserved
    probe = (
        {str(n): round(t * 1000, 2) for n, t in sorted(_choice.seconds.items())} if _choice else {}
    )
    return {
        "confined": True,
        "compute_thread": chosen,
        "reserved": _reserved,
        "probe_ms_by_threads": probe,
        "other_threads": 1,
        "openmp": openmp,
    }
