"""What the status builders report besides the status itself: problems and Events.

Kept apart from :mod:`status` so that the builders of parts of the status
(:mod:`cameras`) report in the same shapes without importing the status builder.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Problem:
    """Something the operator found wrong; ``blocking`` problems make Ready False."""

    reason: str
    message: str
    blocking: bool = True


@dataclasses.dataclass(frozen=True)
class Transition:
    """A change worth a Kubernetes Event (a condition flip, a camera hand-over)."""

    type: str  # "Normal" or "Warning"
    reason: str
    message: str
