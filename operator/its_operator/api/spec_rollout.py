"""``spec.rollout``: how the Deployment replaces pods on a change.

Separate from ``spec_autoscaling`` (how many pods) because its rules are about GPU
safety during a change, not about counts: the default ``maxSurge`` 0 never needs a
spare GPU, and both limits at 0 would deadlock a RollingUpdate.
"""

from __future__ import annotations

import enum
from typing import Self

from pydantic import ConfigDict, Field, model_validator

from its_operator.api import base, spec_fields


class RolloutStrategy(enum.StrEnum):
    RECREATE = "Recreate"
    ROLLING_UPDATE = "RollingUpdate"


class RolloutSpec(base.CrModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                base.cel(
                    "self.strategy != 'RollingUpdate' || !(string(self.maxSurge) in ['0', '0%']"
                    " && string(self.maxUnavailable) in ['0', '0%'])",
                    "rollout.maxSurge and rollout.maxUnavailable must not both be 0",
                    ".maxUnavailable",
                )
            ]
        }
    )

    strategy: RolloutStrategy = Field(
        RolloutStrategy.ROLLING_UPDATE,
        description="RollingUpdate or Recreate (all old pods stop before new ones start).",
    )
    max_surge: spec_fields.IntOrPercent = Field(
        0,
        description="Extra pods during a RollingUpdate. 0 (the default) is GPU-safe: with no "
        "spare GPU a surge pod cannot schedule and the rollout would deadlock.",
    )
    max_unavailable: spec_fields.IntOrPercent = Field(
        1, description="Pods that may be down during a RollingUpdate."
    )
    progress_deadline_seconds: int = Field(
        1800,
        ge=10,
        le=86400,
        description="A rollout without progress for this long is reported Degraded. Keep it "
        "above runtime.startupTimeoutSeconds.",
    )

    @model_validator(mode="after")
    def _not_both_zero(self) -> Self:
        if (
            self.strategy is RolloutStrategy.ROLLING_UPDATE
            and str(self.max_surge) in ("0", "0%")
            and str(self.max_unavailable) in ("0", "0%")
        ):
            raise ValueError("rollout.maxSurge and rollout.maxUnavailable must not both be 0")
        return self
