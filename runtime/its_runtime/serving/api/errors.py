"""The batcher's errors as HTTP answers: back off (429), try elsewhere or later (503).

The shape of every error answer is :class:`its_runtime.problems.ApiError`; this module
only knows which status each batcher failure earns.
"""

from __future__ import annotations

from its_runtime import problems
from its_runtime.serving import batching

#: HTTP status for each batcher error: back off (429), try elsewhere or later (503).
_BATCHER_STATUS: dict[type[batching.BatcherError], int] = {
    batching.QueueFullError: 429,
    batching.DeadlineExceededError: 503,
    batching.BatcherClosedError: 503,
    batching.BatchExecutionError: 500,
}


def from_batcher(exc: batching.BatcherError) -> problems.ApiError:
    return problems.ApiError(
        _BATCHER_STATUS.get(type(exc), 500), exc.reason, str(exc), counted=True
    )
