"""``spec.autoscaling``: the HorizontalPodAutoscaler and what it scales on.

``builders.hpa`` renders exactly this group, and the rule inside it (enabled needs at
least one target or raw metric) is written twice, as CEL and as a validator, side by
side. The rule that spans groups (no ``runtime.replicas`` while enabled) lives in
``spec``, the one module that sees both.
"""

from __future__ import annotations

from typing import Self

from pydantic import ConfigDict, Field, model_validator

from its_operator.api import base, spec_fields


class AutoscalingTargets(base.CrModel):
    gpu_utilization_percent: int | None = Field(
        None,
        ge=1,
        le=100,
        description="Average utilisation of the pods' GPUs in percent, from NVML "
        "(the custom metric its_gpu_utilization_percent).",
    )
    cpu_utilization_percent: int | None = Field(
        None, ge=1, le=1000, description="Average CPU utilisation of the requests."
    )
    queue_time_ms: float | None = Field(
        None,
        gt=0,
        le=60000,
        description="Average time a request waits in the batcher queue "
        "(its_queue_time_ms, from the runtime's queue-duration counter).",
    )
    p99_latency_ms: float | None = Field(
        None, gt=0, le=60000, description="p99 request latency (its_latency_p99_ms)."
    )

    def any_set(self) -> bool:
        return any(v is not None for v in self.model_dump().values())


_TARGETS = ("gpuUtilizationPercent", "cpuUtilizationPercent", "queueTimeMs", "p99LatencyMs")


class AutoscalingSpec(base.CrModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                base.cel(
                    "self.minReplicas <= self.maxReplicas",
                    "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
                    ".minReplicas",
                ),
                base.cel(
                    "!self.enabled || size(self.metrics) > 0 || "
                    + " || ".join(f"has(self.targets.{t})" for t in _TARGETS),
                    "autoscaling.enabled needs at least one of autoscaling.targets or "
                    "autoscaling.metrics",
                    ".targets",
                ),
            ]
        }
    )

    enabled: bool = Field(False, description="Create a HorizontalPodAutoscaler (autoscaling/v2).")
    min_replicas: int = Field(1, ge=1, le=100, description="Fewest replicas.")
    max_replicas: int = Field(4, ge=1, le=100, description="Most replicas.")
    targets: AutoscalingTargets = Field(
        default_factory=AutoscalingTargets,
        description="Metric targets; pods metrics need a custom-metrics adapter.",
    )
    behavior: spec_fields.FreeForm | None = Field(
        None, description="autoscaling/v2 HorizontalPodAutoscalerBehavior, passed through."
    )
    metrics: list[spec_fields.FreeForm] = Field(
        default_factory=list,
        max_length=16,
        description="Raw autoscaling/v2 MetricSpec entries, appended to those from targets.",
    )

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.minReplicas must not exceed autoscaling.maxReplicas")
        if self.enabled and not self.metrics and not self.targets.any_set():
            raise ValueError(
                "autoscaling.enabled needs at least one of autoscaling.targets or "
                "autoscaling.metrics"
            )
        return self
