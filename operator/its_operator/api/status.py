"""``status`` of an AnalyticsPipeline: what the operator observed, for people and tools.

Shaped for the tools that read it, not for the operator: conditions follow
``metav1.Condition`` exactly (kstatus, Argo CD and ``kubectl wait`` understand them),
``observedGeneration`` is the CR's own generation (never a child's), and the flat
``reason``/``replicasSummary`` strings exist only so printer columns can show them.
``Ready`` and ``Progressing`` have positive polarity; ``Degraded`` is True only while
something is wrong. ``Reconciling`` and ``Stalled`` are kstatus' own abnormal-true
conditions (``sigs.k8s.io/cli-utils/pkg/kstatus``, which Flux reads): Reconciling
while the operator or the Deployment still works towards the spec, Stalled while it
cannot get there without a change by the user; never both True.
"""

from __future__ import annotations

import enum

from pydantic import Field

from its_operator.api import base


class ConditionType(enum.StrEnum):
    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    #: kstatus: True while a rollout or the pods are still on their way (InProgress).
    RECONCILING = "Reconciling"
    #: kstatus: True while the spec cannot work without a user's change (Failed).
    STALLED = "Stalled"


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(base.CrModel):
    type: str = Field(
        ...,
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="Ready, Progressing, Degraded, Reconciling or Stalled.",
    )
    status: ConditionStatus = Field(..., description="True, False or Unknown.")
    observed_generation: int = Field(
        0, ge=0, description="The CR generation this condition was computed from."
    )
    last_transition_time: str = Field(
        ...,
        json_schema_extra={"format": "date-time"},
        description="When status last flipped (not when the message changed).",
    )
    reason: str = Field(
        ...,
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="CamelCase cause, e.g. SecretNotFound or ProgressDeadlineExceeded.",
    )
    message: str = Field("", max_length=32768, description="Human-readable detail.")


class ServiceMonitorState(enum.StrEnum):
    APPLIED = "Applied"
    DISABLED = "Disabled"
    CRD_NOT_INSTALLED = "CRDNotInstalled"


class MonitoringStatus(base.CrModel):
    service_monitor: ServiceMonitorState = Field(
        ..., description="Applied, Disabled (spec), or CRDNotInstalled (skipped)."
    )


class EngineCacheStatus(base.CrModel):
    claim_name: str = Field(..., description="PersistentVolumeClaim holding the engines.")
    phase: str = Field("Pending", description="Claim phase: Pending, Bound or Lost.")
    capacity: str | None = Field(None, description="Bound capacity.")


#: Bounds that keep ``status.cameras`` small for any pipeline (1,000 cameras included).
UNASSIGNED_NAMES_MAX = 50
HOLDERS_MAX_CAMERAS = 64
MEMBERS_MAX = 200


class CameraMember(base.CrModel):
    name: str = Field(..., max_length=253, description="The replica's pod (its Lease holder).")
    capacity: int = Field(0, ge=0, description="Cameras it declared it can take.")
    cameras: int = Field(0, ge=0, description="Cameras it holds now.")


class CamerasStatus(base.CrModel):
    """Who analyses which camera, as every replica computes it from the live membership
    Leases (a Lease is live while renewTime + leaseDurationSeconds is in the future, by
    the operator's clock). Bounded: per-camera holders only for small pipelines."""

    total: int = Field(0, ge=0, description="Cameras in the spec.")
    assigned: int = Field(0, ge=0, description="Cameras a live replica holds.")
    unassigned: int = Field(0, ge=0, description="Cameras no live replica has room for.")
    summary: str = Field("0/0", max_length=32, description="assigned/total, for kubectl get.")
    replicas_needed: int = Field(
        0, ge=0, description="ceil(total / runtime.maxCamerasPerReplica): the replica floor."
    )
    unassigned_names: list[str] = Field(
        default_factory=list,
        max_length=UNASSIGNED_NAMES_MAX,
        description=f"The first {UNASSIGNED_NAMES_MAX} unassigned cameras, by name.",
    )
    members: list[CameraMember] = Field(
        default_factory=list,
        max_length=MEMBERS_MAX,
        description=f"Live replicas (the first {MEMBERS_MAX} by name) and their load.",
    )
    holders: dict[str, str] | None = Field(
        None,
        max_length=HOLDERS_MAX_CAMERAS,
        description=f"camera -> replica, only while total <= {HOLDERS_MAX_CAMERAS}.",
    )


class PipelineStatus(base.CrModel):
    observed_generation: int = Field(
        0, ge=0, description="metadata.generation of the spec the status describes."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Progressing, Degraded, Reconciling and Stalled (metav1.Condition).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    replicas: int = Field(0, ge=0, description="Pods of the runtime Deployment.")
    ready_replicas: int = Field(0, ge=0, description="Pods passing readiness.")
    updated_replicas: int = Field(0, ge=0, description="Pods running the current spec.")
    replicas_summary: str = Field("0/0", description="ready/desired, for kubectl get.")
    reason: str = Field("", description="Why Ready is what it is, for kubectl get.")
    engine_cache: EngineCacheStatus | None = Field(None, description="Engine cache claim.")
    endpoint: str | None = Field(None, description="In-cluster URL of the runtime Service.")
    monitoring: MonitoringStatus | None = Field(None, description="ServiceMonitor state.")
    cameras: CamerasStatus | None = Field(
        None, description="Camera assignment across the runtime replicas."
    )
