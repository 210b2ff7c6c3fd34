"""What the scheduler needs from whatever runs batches, said as Protocols.

The scheduler is CPU-only: it never allocates batch buffers, pinned memory or CUDA
streams. How a batch gets to the device is the executor's business, and the Protocol
says how the executor takes one, in two steps:

1. :meth:`BatchExecutor.stage` collates the batch's frames into the executor's own
   buffers (the engine: pinned memory and a non-blocking copy on a side stream);
2. :meth:`BatchExecutor.run_batch` runs what ``stage`` returned.

:attr:`BatchExecutor.pipeline_depth` says how many batches may be staged or running at
once: with 1 the scheduler stages and runs each batch on its compute thread; with 2 it
stages the next batch on a second thread while one runs (for an executor whose staging
overlaps compute). The engine (``its_runtime.engine``), the lazy engine that stands in
while it loads, and the plain CPU executors of the tests and kits all implement it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from its_runtime.detections import Detections


class BatchExecutor(Protocol):
    """Stages and runs batches; each method is called from one scheduler thread only."""

    @property
    def max_batch_size(self) -> int: ...

    @property
    def input_shape(self) -> tuple[int, int, int]: ...

    @property
    def pipeline_depth(self) -> int:
        """Batches staged or running at once: 1, or 2 to stage one while another runs.

        Read before each batch is formed (a lazily loaded engine may change it once).
        """
        ...

    def stage(self, frames: Sequence[torch.Tensor]) -> torch.Tensor:
        """Collate ``1..max_batch_size`` float32 ``(C, H, W)`` CPU frames into a batch.

        Returns the ``(B, C, H, W)`` batch for :meth:`run_batch`, in memory the executor
        owns and may reuse once that batch has run. At most ``pipeline_depth`` staged
        batches are alive at once, and they are run in the order they were staged.
        """
        ...

    def run_batch(self, batch: torch.Tensor) -> list[Detections]:
        """Run a batch from :meth:`stage` (or any CPU ``(B, C, H, W)`` float32 batch);
        returns one :class:`Detections` per frame."""
        ...


class FrameListener(Protocol):
    """Told about every frame's outcome (the performance report is one)."""

    def record(self, latency_s: float, ok: bool) -> None: ...
