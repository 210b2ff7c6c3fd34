"""Why an engine could not start, said once, clearly.

The runtime fails at start (not on the first request) when the model file, its input
spec or every backend is unusable; the message names the file, the expected and the
actual value, so an operator reading pod logs or ``/ready`` knows what to fix.
"""

from __future__ import annotations


class EngineLoadError(RuntimeError):
    """The model could not be loaded or compiled into a runnable engine."""
