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
"""

from __future__ import annotations

import logging
import threading

import torch

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
    torch.set_num_threads(count)
    _set_default(1)
    log.info(
        "torch intra-op threads: %d on %s, 1 elsewhere", count, threading.current_thread().name
    )
    return count


def _set_default(count: int) -> None:
    """The default for threads that start using torch later, without touching this
    thread's own count (``torch.set_num_threads`` sets both, so a short-lived thread
    calls it)."""
    setter = threading.Thread(target=torch.set_num_threads, args=(count,), name="its-threads")
    setter.start()
    setter.join()


def describe() -> dict[str, object]:
    """For ``/ready``: who runs torch's parallel kernels."""
    if _reserved is None:
        return {"confined": False, "threads": int(torch.get_num_threads())}
    return {"confined": True, "compute_thread": _reserved, "other_threads": 1}
