"""Dynamic batching: a CPU-only scheduler in front of the executor that owns the device.

The package is split by responsibility: :mod:`.errors` (why a frame is refused or not
answered), :mod:`.queue` (the per-priority entry queue), :mod:`.policy` (Triton's rules
for when a batch goes and how big, over the engine's batch plan), :mod:`.predictor`
(compute time per bucket, for shedding hopeless frames), :mod:`.executor` (the
Protocol an executor implements: ``stage`` then ``run_batch``) and :mod:`.scheduler`
(the :class:`DynamicBatcher` that ties them to the event loop and its threads). The
public names are re-exported here, so callers write ``batching.DynamicBatcher`` and
``batching.QueueFullError``.
"""

from its_runtime.serving.batching.errors import (
    BatcherClosedError,
    BatcherError,
    BatchExecutionError,
    DeadlineExceededError,
    QueueFullError,
)
from its_runtime.serving.batching.executor import BatchExecutor, FrameListener
from its_runtime.serving.batching.scheduler import DynamicBatcher

__all__ = [
    "BatchExecutionError",
    "BatchExecutor",
    "BatcherClosedError",
    "BatcherError",
    "DeadlineExceededError",
    "DynamicBatcher",
    "FrameListener",
    "QueueFullError",
]
