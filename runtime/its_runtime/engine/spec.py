"""What the engine must accept: one frame shape and a set of batch buckets.

Compiled engines are fastest when they see few distinct shapes: torch.compile would
recompile for each new batch size and, past its recompile limit, silently run eager.
So the engine only ever runs batch sizes from a small fixed set (powers of two up to
the maximum, plus the configured opt/preferred sizes) and pads a batch up to the next
bucket. Warm-up runs every bucket once, so no request ever pays for a compile. The sizes
come from the :class:`~its_runtime.engine.plan.BatchPlan` the batcher also holds.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch

from its_runtime import config
from its_runtime.engine import plan as plan_mod


@dataclass(frozen=True)
class InputSpec:
    """Per-frame input shape, the batch bounds and the buckets derived from them."""

    channels: int
    height: int
    width: int
    max_batch: int
    opt_batch: int
    buckets: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    #: The model was exported for exactly one batch size: every batch is padded to it.
    fixed_batch: bool = False

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def describe(self) -> str:
        """Stable text for cache keys and messages, e.g. ``3x64x64 float32 batch<=8``."""
        dims = "x".join(str(d) for d in self.frame_shape)
        dtype = str(self.dtype).removeprefix("torch.")
        buckets = ",".join(str(b) for b in self.buckets)
        return f"{dims} {dtype} batch 1..{self.max_batch} opt {self.opt_batch} buckets {buckets}"

    def bucket_for(self, batch: int) -> int:
        """The smallest bucket that holds ``batch`` frames."""
        if batch < 1 or batch > self.max_batch:
            raise ValueError(f"batch size {batch} is outside 1..{self.max_batch}")
        return self.buckets[bisect.bisect_left(self.buckets, batch)]


#: The bucket rule lives with the batch plan; kept here for the engine's callers.
batch_buckets = plan_mod.batch_buckets


def from_model_config(
    model: config.ModelConfig, plan: plan_mod.BatchPlan | None = None
) -> InputSpec:
    """The spec for ``model`` with the batch sizes of ``plan`` (derived from the config
    when not given; ``its_runtime.main`` passes the one plan it shares with the batcher)."""
    c, h, w = model.input_shape
    if plan is None:
        plan = plan_mod.from_config(model.batching)
    return InputSpec(
        channels=c,
        height=h,
        width=w,
        max_batch=plan.max_batch_size,
        opt_batch=plan.opt_batch_size,
        buckets=plan.buckets,
    )
