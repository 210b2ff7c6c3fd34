"""``spec.runtime``: the runtime pods (image, resources, placement, environment).

Everything here ends up in the Deployment's pod template and nowhere else, which is
why it is one module: ``builders.deployment`` reads it, and the rules that keep a pod
template valid (one ``valueFrom`` source, no override of the variables the operator
sets from ``database``/``cache``) sit next to the fields they guard.
"""

from __future__ import annotations

import enum
from typing import Any, Self

from pydantic import ConfigDict, Field, model_validator

from its_operator.api import base, quantities, spec_fields
from its_runtime import config as rc

#: Environment variables the operator itself sets from ``database``/``cache``, and the
#: pod's identity (downward API): an override would give two replicas one Lease holder.
RESERVED_ENV = (rc.DATABASE_DSN_ENV, rc.REDIS_URL_ENV, rc.POD_NAME_ENV, rc.POD_NAMESPACE_ENV)
_RESERVED_WHY = (
    "(the first two come from spec.database and spec.cache, the others are the pod's "
    "identity, from the downward API)"
)


class ConfigMapKeyRef(base.CrModel):
    name: spec_fields.ResourceName = Field(
        ..., description="Name of the ConfigMap (same namespace)."
    )
    key: str = Field(..., min_length=1, max_length=253, description="Key inside the ConfigMap.")


class FieldRef(base.CrModel):
    field_path: str = Field(
        ..., min_length=1, max_length=256, description="Pod field, e.g. metadata.name."
    )


class EnvVarSource(base.CrModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                base.cel(
                    "[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef)]"
                    ".filter(x, x).size() == 1",
                    "runtime.env[].valueFrom needs exactly one of secretKeyRef, configMapKeyRef, "
                    "fieldRef",
                )
            ]
        }
    )

    secret_key_ref: spec_fields.SecretKeyRef | None = Field(None, description="Read a Secret key.")
    config_map_key_ref: ConfigMapKeyRef | None = Field(None, description="Read a ConfigMap key.")
    field_ref: FieldRef | None = Field(None, description="Read a field of the pod.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        chosen = [self.secret_key_ref, self.config_map_key_ref, self.field_ref]
        if sum(x is not None for x in chosen) != 1:
            raise ValueError(
                "runtime.env[].valueFrom needs exactly one of secretKeyRef, configMapKeyRef, "
                "fieldRef"
            )
        return self


class EnvVar(base.CrModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                base.cel(
                    "!(has(self.value) && has(self.valueFrom))",
                    "runtime.env[] sets value or valueFrom, not both",
                ),
                base.cel(
                    " && ".join(f"self.name != '{n}'" for n in RESERVED_ENV),
                    "runtime.env[].name: "
                    + ", ".join(RESERVED_ENV)
                    + " are reserved "
                    + _RESERVED_WHY,
                    ".name",
                ),
            ]
        }
    )

    name: str = Field(
        ...,
        min_length=1,
        max_length=256,
        pattern=spec_fields.ENV_NAME_PATTERN,
        description="Variable name.",
    )
    value: str | None = Field(None, max_length=32768, description="Literal value.")
    value_from: EnvVarSource | None = Field(
        None, description="Take the value from a Secret, ConfigMap or pod field."
    )

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if self.value is not None and self.value_from is not None:
            raise ValueError("runtime.env[] sets value or valueFrom, not both")
        if self.name in RESERVED_ENV:
            raise ValueError(
                f"runtime.env[].name: {self.name} is reserved: "
                + ", ".join(RESERVED_ENV)
                + " are reserved "
                + _RESERVED_WHY
            )
        return self


class TolerationOperator(enum.StrEnum):
    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(enum.StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(base.CrModel):
    key: str | None = Field(None, max_length=316, description="Taint key; empty matches all.")
    operator: TolerationOperator = Field(TolerationOperator.EQUAL, description="Exists or Equal.")
    value: str | None = Field(None, max_length=63, description="Taint value (operator Equal).")
    effect: TaintEffect | None = Field(None, description="Taint effect; empty matches all.")
    toleration_seconds: int | None = Field(
        None, ge=0, description="How long a NoExecute taint is tolerated."
    )


_RESOURCE_FIELDS = {
    "cpu": "cpu",
    "memory": "memory",
    "cpuLimit": "cpu_limit",
    "memoryLimit": "memory_limit",
}
_LIMITS = {"cpuLimit": "cpu", "memoryLimit": "memory"}


def _resource_rules() -> list[Any]:
    """What the Deployment would refuse, refused at admission instead: a negative
    request or limit, or a limit below its request."""
    rules = []
    for wire in _RESOURCE_FIELDS:
        test = spec_fields.cel_unless_malformed(
            f"!quantity(self.{wire}).isLessThan(quantity('0'))", f"self.{wire}"
        )
        rule = test if wire in ("cpu", "memory") else f"!has(self.{wire}) || {test}"
        rules.append(base.cel(rule, f"runtime.resources.{wire} must not be negative", f".{wire}"))
    for limit, request in _LIMITS.items():
        rules.append(
            base.cel(
                f"!has(self.{limit}) || "
                + spec_fields.cel_unless_malformed(
                    f"quantity(self.{limit}).compareTo(quantity(self.{request})) >= 0",
                    f"self.{request}",
                    f"self.{limit}",
                ),
                f"runtime.resources.{limit} must be at least runtime.resources.{request}",
                f".{limit}",
            )
        )
    return rules


class ResourcesSpec(base.CrModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _resource_rules()})

    gpu: int = Field(
        1, ge=0, le=16, description="GPUs per replica (requests = limits); 0 runs on CPU."
    )
    gpu_resource_name: str = Field(
        "nvidia.com/gpu",
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9.\-]+/[a-zA-Z0-9.\-_]+$",
        description="Extended resource that counts GPUs (e.g. a MIG profile resource).",
    )
    cpu: spec_fields.Quantity = Field("2", description="CPU request per replica.")
    memory: spec_fields.Quantity = Field("8Gi", description="Memory request per replica.")
    cpu_limit: spec_fields.Quantity | None = Field(None, description="CPU limit; unset means none.")
    memory_limit: spec_fields.Quantity | None = Field(
        None, description="Memory limit; unset means equal to the request."
    )

    @model_validator(mode="after")
    def _deployable(self) -> Self:
        values = {
            wire: quantities.parse(value)
            for wire, attr in _RESOURCE_FIELDS.items()
            if (value := getattr(self, attr)) is not None
        }
        for wire, value in values.items():
            if value < 0:
                raise ValueError(f"runtime.resources.{wire} must not be negative")
        for limit, request in _LIMITS.items():
            if limit in values and values[limit] < values[request]:
                raise ValueError(
                    f"runtime.resources.{limit} must be at least runtime.resources.{request}"
                )
        return self


class ImagePullPolicy(enum.StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class CameraLeaseSpec(base.CrModel):
    """How replicas share cameras: each keeps one membership Lease (``coordination.k8s.io``)
    and the cameras follow the live members. Bounds and defaults are the runtime's own
    (``its_runtime.config.ScaleOutConfig``): a killed replica's cameras resume elsewhere
    within ``durationSeconds + 2 x renewPeriodSeconds`` (default 14 s) plus the camera's
    reconnect."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                base.cel(
                    "self.durationSeconds > 3 * self.renewPeriodSeconds",
                    "runtime.cameraLease.durationSeconds must exceed three times "
                    "renewPeriodSeconds",
                    ".durationSeconds",
                )
            ]
        }
    )

    duration_seconds: int = spec_fields.runtime_field(
        rc.ScaleOutConfig,
        "lease_duration_seconds",
        description="A replica that stops renewing its Lease (killed, stalled, cut off) "
        "loses its cameras after this long; it stops them itself before that. Must "
        "exceed three times renewPeriodSeconds (a replica fences itself after "
        "durationSeconds - 2 x renewPeriodSeconds without a renewal, which must outlast "
        "one period).",
    )
    renew_period_seconds: int = spec_fields.runtime_field(
        rc.ScaleOutConfig,
        "renew_period_seconds",
        description="How often each replica renews its Lease and re-reads the members "
        "(one Lease write per replica per period, whatever the number of cameras).",
    )

    @model_validator(mode="after")
    def _lease_outlasts_renewals(self) -> Self:
        if self.duration_seconds <= 3 * self.renew_period_seconds:
            raise ValueError(
                "runtime.cameraLease.durationSeconds must exceed three times renewPeriodSeconds"
            )
        return self

    @property
    def failover_bound_seconds(self) -> int:
        """The longest a killed replica's cameras go unanalysed."""
        # Survivors time a silent Lease from when they saw it renewed (up to one period
        # after the renewal) and act at their next tick (up to one period later).
        return self.duration_seconds + 2 * self.renew_period_seconds


class RuntimeSpec(base.CrModel):
    image: str = Field(..., min_length=1, max_length=512, description="Runtime container image.")
    image_pull_policy: ImagePullPolicy = Field(
        ImagePullPolicy.IF_NOT_PRESENT, description="Always, IfNotPresent or Never."
    )
    image_pull_secrets: list[spec_fields.ResourceName] = Field(
        default_factory=list, max_length=8, description="Secrets for pulling the image."
    )
    replicas: int | None = Field(
        None,
        ge=0,
        le=100,
        description="Replicas when autoscaling is off (unset: 1). Must stay unset while "
        "autoscaling.enabled is true: the HorizontalPodAutoscaler owns the count.",
    )
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="GPU, CPU and memory per replica."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the pods must match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Taints the pods tolerate."
    )
    affinity: spec_fields.FreeForm | None = Field(
        None, description="Pod affinity, a core/v1 Affinity object, passed through."
    )
    priority_class_name: str | None = Field(
        None, max_length=253, description="PriorityClass of the pods."
    )
    service_account_name: spec_fields.ResourceName | None = Field(
        None,
        description="ServiceAccount of the pods (unset: the operator creates "
        "<pipeline>-runtime). Either way the operator binds it, in this namespace only, "
        "to a Role for the membership Leases (coordination.k8s.io leases), nothing else.",
    )
    max_cameras_per_replica: int = spec_fields.runtime_field(
        rc.ScaleOutConfig,
        "max_cameras_per_replica",
        description="Most cameras one replica analyses. Cameras that fit nowhere stay "
        "unassigned (status.cameras); the replica floor is ceil(cameras / this): with "
        "autoscaling the HPA's minReplicas is raised to it, without it Ready is False "
        "(InsufficientCapacity) while runtime.replicas is below it.",
    )
    camera_lease: CameraLeaseSpec = Field(
        default_factory=CameraLeaseSpec,
        description="Membership Lease timing: how fast cameras move off a failed replica.",
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=64,
        description="Extra environment variables; Secret values only through valueFrom.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    decode: rc.CameraDecode = spec_fields.runtime_field(
        rc.RuntimeConfig,
        "camera_decode",
        description="Where camera streams are decoded. auto (default): on the GPU with NVDEC "
        "where torch has CUDA, FFmpeg has its CUDA hwaccel and NVDEC supports the codec, frames "
        "staying on the device; else on the CPU. gpu: the same, but a camera that falls back "
        "to the CPU is logged as a warning. cpu: always FFmpeg in software. The choice and its "
        "reason are decided per camera connection and shown in /ready, in each camera's "
        "stream state and in the its_camera_decode_info metric.",
    )
    tracker: rc.TrackerKind = spec_fields.runtime_field(
        rc.RuntimeConfig,
        "tracker",
        description="Multi-object tracker of every camera, which line counts, regions, speed "
        "and the other traffic measures follow. bytetrack (default), sort and ocsort are "
        "the trackers library's (Apache-2.0); iou is the built-in greedy IoU tracker. "
        "benchmarks/accuracy.py measures each on generated scenes under detector noise "
        "(results/accuracy.json); the default is the one it adopts.",
    )
    startup_timeout_seconds: int = Field(
        1200,
        ge=30,
        le=7200,
        description="How long a pod may take to start (a first TensorRT engine build takes "
        "minutes) before the startup probe restarts it.",
    )
