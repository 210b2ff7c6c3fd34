"""Keep CPython's full collections off the frame path: freeze what start-up built.

A runtime that has imported torch, torchvision, PyAV and the rest and loaded an engine
holds some 400,000 objects tracked by the cyclic garbage collector. CPython runs a
full (generation 2) collection whenever the long-lived objects have grown by a quarter,
and that collection walks all of them: measured here, 200-500 ms during which the
interpreter runs nothing else. Start-up and warm-up create most of those objects, so
the first full collection comes a little after the server turned ready, in the middle
of serving: every request and camera frame in flight waits for it (a p99 of 222 ms in
the first cameras-benchmark step where its repeats measured 31-88 ms).

:func:`settle` runs once when warm-up is done, before ``/ready`` turns true: one full
collection (garbage from loading goes now, while no frame waits), then
:func:`gc.freeze` moves every surviving object to the permanent generation, which later
collections never walk. Objects made afterwards are collected as usual, so nothing
leaks; a frozen object that later becomes garbage is freed by reference counting, as
almost all are (only frozen cycles stay, and start-up's cycles are long-lived by
nature). Instagram's ``gc.freeze`` for forked workers is the same idea.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import time

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Settled:
    #: Objects in the permanent generation after the freeze (all freezes so far).
    frozen: int
    #: How long the collection + freeze took (the pause taken before ready).
    pause_s: float


def settle(reason: str = "warm-up done") -> Settled:
    """Collect once and freeze the survivors; idempotent and cheap to repeat."""
    start = time.perf_counter()
    gc.collect()
    gc.freeze()
    done = Settled(frozen=gc.get_freeze_count(), pause_s=time.perf_counter() - start)
    log.info(
        "%s: %d objects frozen out of the garbage collector's full collections (%.0f ms)",
        reason,
        done.frozen,
        done.pause_s * 1000,
    )
    return done
