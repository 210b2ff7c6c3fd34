"""The batcher's errors: why a frame was refused or not answered.

Each has a ``reason`` that is both the metric label and the API's reason, and the HTTP
layer maps each class to one status (``serving.api.errors``). They derive from the
floor's :class:`its_runtime.submission.SubmitError`, so a camera in the data plane can
tell "refused or shed, go on with the next frame" from a bug without importing serving.
"""

from __future__ import annotations

from its_runtime import submission


class BatcherError(submission.SubmitError):
    """Base of the batcher's errors; ``reason`` is the metric label and API reason."""

    reason = "batcher"


class QueueFullError(BatcherError):
    """The queue holds ``maxQueueSize`` frames (HTTP 429): retry later."""

    reason = "queue_full"


class DeadlineExceededError(BatcherError):
    """The frame's deadline passed, or would pass before its batch finished (HTTP 503)."""

    reason = "deadline_exceeded"


class BatcherClosedError(BatcherError):
    """The runtime drains or has stopped and takes no new frames (HTTP 503)."""

    reason = "draining"


class BatchExecutionError(BatcherError):
    """The executor failed on the frame's batch (HTTP 500); other batches go on."""

    reason = "execution"
