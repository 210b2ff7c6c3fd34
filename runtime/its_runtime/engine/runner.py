"""What a backend hands the engine: a forward function and how to feed it.

Backends differ in what they need from the caller (padding to fixed batch buckets,
half-precision or channels-last input, a compiler stance while running) and in what
they actually ended up as (the precision used may be lower than asked on a device
that cannot do better). This small record carries that, so the executor stays the
same for every backend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from its_runtime import config


@dataclass
class Runner:
    forward: Callable[[torch.Tensor], Any]
    backend: config.Backend
    precision: config.Precision
    #: Run only bucket-sized batches (a fixed-shape compile); else any 1..max batch.
    pads_to_buckets: bool = False
    input_dtype: torch.dtype = torch.float32
    channels_last: bool = False
    #: After warm-up, make a recompile an error instead of a silent slow path.
    strict_after_warmup: bool = False
    #: Where the engine came from: "built", "cache", or "none" (eager, no cache).
    origin: str = "none"
