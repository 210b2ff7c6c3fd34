"""``spec.autoscaling``: the HorizontalPodAutoscaler and what it scales on.

``builders.hpa`` renders exactly this group, and the rules inside it (enabled needs at
least one target or raw metric; enabled and external exclude each other) are written
twice, as CEL and as a validator, side by side.

Who owns the Deployment's ``.spec.replicas`` is one of three answers, and
:meth:`AutoscalingSpec.operator_sets_replicas` is the one place that says which:

* neither ``enabled`` nor ``external``: the operator (``runtime.replicas``, default 1);
* ``enabled``: the operator's HorizontalPodAutoscaler;
* ``external``: a scaler the operator does not manage (KEDA's ScaledObject, a custom
  controller) that writes the scale subresource. The operator creates no HPA and never
  applies ``replicas``, so server-side apply leaves the field to that scaler and drift
  repair never puts it back.

The rule that spans groups (no ``runtime.replicas`` while enabled) lives in ``spec``,
the one module that sees both.
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


_BOTH = (
    "autoscaling.enabled and autoscaling.external exclude each other: enabled creates "
    "the operator's HorizontalPodAutoscaler, external leaves the replica count to a "
    "scaler such as KEDA (two autoscalers on one Deployment fight over it)"
)
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
                base.cel(
                    "!(self.enabled && self.external)",
                    _BOTH,
                    ".external",
                ),
            ]
        }
    )

    enabled: bool = Field(False, description="Create a HorizontalPodAutoscaler (autoscaling/v2).")
    external: bool = Field(
        False,
        description="An external scaler such as KEDA owns the runtime Deployment's "
        ".spec.replicas: the operator creates no HorizontalPodAutoscaler and leaves "
        "replicas alone (it never applies the field, so it neither sets nor restores it). "
        "Excludes enabled; leave runtime.replicas unset. minReplicas, maxReplicas, "
        "targets, behavior and metrics are then not used: configure the scaler instead, "
        "with at least ceil(cameras / runtime.maxCamerasPerReplica) replicas.",
    )
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
        if self.enabled and self.external:
            raise ValueError(_BOTH)
        if self.enabled and not self.metrics and not self.targets.any_set():
            raise ValueError(
                "autoscaling.enabled needs at least one of autoscaling.targets or "
                "autoscaling.metrics"
            )
        return self

    def operator_sets_replicas(self) -> bool:
        """Whether the operator applies the Deployment's ``replicas`` (neither its own
        HPA nor an external scaler owns the count)."""
        return not (self.enabled or self.external)
