"""OpenMP settings libgomp reads once, when torch loads it: imported for its effect,
first, by ``its_runtime.main`` (before anything imports torch).

``GOMP_SPINCOUNT``: how long an OpenMP worker spins waiting for the next parallel region
before it sleeps. libgomp's default (300,000 spins) keeps the compute thread's team
burning a core for a while after every forward, CPU the camera decoders need. Measured
here (SSDlite320 AOTInductor on the compute thread, 2 threads, 30 forwards a second):
default 12.2 ms per forward and 32.2 ms of CPU each; 10,000 spins 11.6 ms and 22.7 ms
of CPU (the forward's own two threads' worth); 1,000 spins 14.9 ms (workers sleep
between the forward's own regions). A value set in the environment wins.
"""

from __future__ import annotations

import os
import sys

SPIN_COUNT = "10000"

#: False when torch (and its libgomp) was loaded before this module: too late to matter.
BEFORE_TORCH = "torch" not in sys.modules
os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)


def effective() -> dict[str, object]:
    """The settings libgomp read (for benchmark records and ``/ready``)."""
    return {"GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"), "before_torch": BEFORE_TORCH}
