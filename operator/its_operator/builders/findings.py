"""What the status builders report besides the status itself: problems and Events.

Kept apart from :mod:`status` so that the builders of parts of the status
(:mod:`cameras`) report in the same shapes without importing the status builder.
"""

from __future__ import annotations

import dataclasses

from its_runtime import redaction

#: Problems no retry can cure: the user has to change the spec (or create what it
#: names) before the pipeline can work. They make kstatus' ``Stalled`` True. A child
#: the API server refused (``<Kind>ApplyFailed``) is not among them: the operator
#: retries it with back-off, and its Problem does not say whether the refusal was
#: final (a 422) or passing (a 500, a timeout); ``Problem.stalls`` can say so.
STALLING_REASONS = frozenset(
    {
        "InvalidSpec",  # the spec does not parse
        "SecretNotFound",  # a referenced Secret is missing
        "SecretKeyNotFound",  # ... or lacks the key
        "InsufficientCapacity",  # runtime.replicas cannot hold every camera
    }
)


@dataclasses.dataclass(frozen=True)
class Problem:
    """Something the operator found wrong; ``blocking`` problems make Ready False.

    ``stalls`` says whether it lasts until the user changes something (kstatus'
    ``Stalled``); None leaves that to the reason (:data:`STALLING_REASONS`)."""

    reason: str
    message: str
    blocking: bool = True
    stalls: bool | None = None

    def __post_init__(self) -> None:
        # Status conditions and Events quote problems: never a URL's credentials.
        object.__setattr__(self, "message", redaction.redact(self.message))

    @property
    def stalling(self) -> bool:
        return self.reason in STALLING_REASONS if self.stalls is None else self.stalls


@dataclasses.dataclass(frozen=True)
class Transition:
    """A change worth a Kubernetes Event (a condition flip, a camera hand-over)."""

    type: str  # "Normal" or "Warning"
    reason: str
    message: str
