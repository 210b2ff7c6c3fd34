"""What a frame producer may expect when it hands a frame to inference.

The data plane's cameras submit frames to serving's batcher, but neither layer imports
the other: both meet here, on the shared floor. The batcher's errors derive from
:class:`SubmitError`, so a camera can tell "this frame was refused or shed" (count it
and go on with the next frame) from a bug, without knowing the scheduler's classes.
"""

from __future__ import annotations


class SubmitError(Exception):
    """A frame inference refused or could not finish; ``reason`` is the metric label."""

    reason = "refused"
