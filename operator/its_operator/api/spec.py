"""``spec`` of an AnalyticsPipeline: what a user (or a GitOps repo) asks for.

The parts that the runtime reads as is (``model``, ``cameras``, ``slo``, ``gpu``) are
the runtime's own config classes, imported, not copied: the CRD schema, the operator
and the runtime cannot disagree about them. Parts that differ between a CR and the
runtime file (Secrets are referenced in a CR, read from the environment at runtime)
are operator models that borrow the runtime's field definitions (bounds, defaults,
descriptions) through :func:`_runtime_field`.

Every cross-field rule is written twice, side by side: as CEL
(``x-kubernetes-validations``, so the API server rejects a bad CR at apply time) and
as a pydantic validator (so the operator, the unit tests and offline tooling reject
the same spec with the same message). Messages name the field, relative to ``spec``.
"""

from __future__ import annotations

import copy
import enum
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from its_operator.api import base, quantities
from its_runtime import config as rc

#: Kubernetes' own quantity grammar (as controller-gen emits it for resource.Quantity).
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DURATION_PATTERN = r"^[0-9]+(ms|s|m|h)$"
PERCENT_PATTERN = r"^[0-9]+%$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
#: Environment variables the operator itself sets from ``database``/``cache``.
RESERVED_ENV = (rc.DATABASE_DSN_ENV, rc.REDIS_URL_ENV)

Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=64)]
ResourceName = Annotated[str, Field(pattern=DNS_SUBDOMAIN_PATTERN, min_length=1, max_length=253)]
IntOrPercent = Annotated[
    int | Annotated[str, Field(pattern=PERCENT_PATTERN, max_length=8)],
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]
#: A Kubernetes object passed through as is (affinity, raw HPA metrics): the API
#: server validates it when the operator applies the child, and the operator reports
#: a rejection in status.
FreeForm = Annotated[
    dict[str, Any], Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
]


def _runtime_field(model: type[BaseModel], name: str) -> Any:
    """Reuse a runtime config field (type bounds, default, description) in a CR model."""
    return copy.copy(model.model_fields[name])


class SecretKeyRef(base.CrModel):
    """A key of a Secret in the pipeline's namespace; the pod gets it via ``valueFrom``."""

    name: ResourceName = Field(..., description="Name of the Secret (same namespace).")
    key: str = Field(
        ...,
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key inside the Secret's data.",
    )


class ConfigMapKeyRef(base.CrModel):
    name: ResourceName = Field(..., description="Name of the ConfigMap (same namespace).")
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

    secret_key_ref: SecretKeyRef | None = Field(None, description="Read a Secret key.")
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
                    + " and ".join(RESERVED_ENV)
                    + " are reserved (set them through spec.database and spec.cache)",
                    ".name",
                ),
            ]
        }
    )

    name: str = Field(
        ..., min_length=1, max_length=256, pattern=ENV_NAME_PATTERN, description="Variable name."
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
                f"runtime.env[].name: {self.name} is reserved "
                "(set it through spec.database and spec.cache)"
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


class ResourcesSpec(base.CrModel):
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
    cpu: Quantity = Field("2", description="CPU request per replica.")
    memory: Quantity = Field("8Gi", description="Memory request per replica.")
    cpu_limit: Quantity | None = Field(None, description="CPU limit; unset means none.")
    memory_limit: Quantity | None = Field(
        None, description="Memory limit; unset means equal to the request."
    )


class ImagePullPolicy(enum.StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class RuntimeSpec(base.CrModel):
    image: str = Field(..., min_length=1, max_length=512, description="Runtime container image.")
    image_pull_policy: ImagePullPolicy = Field(
        ImagePullPolicy.IF_NOT_PRESENT, description="Always, IfNotPresent or Never."
    )
    image_pull_secrets: list[ResourceName] = Field(
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
    affinity: FreeForm | None = Field(
        None, description="Pod affinity, a core/v1 Affinity object, passed through."
    )
    priority_class_name: str | None = Field(
        None, max_length=253, description="PriorityClass of the pods."
    )
    service_account_name: ResourceName | None = Field(
        None, description="ServiceAccount of the pods (unset: the namespace's default)."
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=64,
        description="Extra environment variables; Secret values only through valueFrom.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    startup_timeout_seconds: int = Field(
        1200,
        ge=30,
        le=7200,
        description="How long a pod may take to start (a first TensorRT engine build takes "
        "minutes) before the startup probe restarts it.",
    )


class AccessMode(enum.StrEnum):
    READ_WRITE_ONCE = "ReadWriteOnce"
    READ_WRITE_MANY = "ReadWriteMany"


class Retention(enum.StrEnum):
    RETAIN = "Retain"
    DELETE = "Delete"


class EngineCacheSpec(base.CrModel):
    enabled: bool = Field(
        True, description="Keep compiled engines on a PVC (false: an emptyDir per pod)."
    )
    size: Quantity = Field(
        "20Gi",
        description="PVC size; it may only grow. The runtime evicts past 90% of it.",
        json_schema_extra={
            "x-kubernetes-validations": [
                base.cel(
                    "quantity(self).compareTo(quantity(oldSelf)) >= 0",
                    "engineCache.size may only grow (a PersistentVolumeClaim cannot shrink)",
                )
            ]
        },
    )
    storage_class_name: str | None = Field(
        None,
        max_length=253,
        description="StorageClass of the PVC (unset: the cluster default). Immutable.",
        json_schema_extra={
            "x-kubernetes-validations": [
                base.cel("self == oldSelf", "engineCache.storageClassName is immutable")
            ]
        },
    )
    access_mode: AccessMode = Field(
        AccessMode.READ_WRITE_ONCE,
        description="ReadWriteOnce (RWO, one replica) or ReadWriteMany (RWX). Immutable.",
        json_schema_extra={
            "x-kubernetes-validations": [
                base.cel("self == oldSelf", "engineCache.accessMode is immutable")
            ]
        },
    )
    retention: Retention = Field(
        Retention.RETAIN,
        description="On pipeline deletion: Retain keeps the PVC (a re-created pipeline of "
        "the same name reuses it), Delete lets garbage collection remove it.",
    )


class AutoscalingTargets(base.CrModel):
    gpu_utilization_percent: int | None = Field(
        None, ge=1, le=100, description="Average GPU utilisation (DCGM_FI_DEV_GPU_UTIL)."
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
    behavior: FreeForm | None = Field(
        None, description="autoscaling/v2 HorizontalPodAutoscalerBehavior, passed through."
    )
    metrics: list[FreeForm] = Field(
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


class CacheSpec(base.CrModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                base.cel(
                    "!(has(self.redisUrl) && has(self.redisUrlSecretRef))",
                    "cache sets redisUrl or redisUrlSecretRef, not both",
                    ".redisUrl",
                )
            ]
        }
    )

    redis_url: str | None = Field(
        None,
        max_length=1024,
        pattern=r"^rediss?://",
        description="Redis URL without credentials (use redisUrlSecretRef for one with them).",
    )
    redis_url_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret key holding the Redis URL."
    )
    l1_max_entries: int = _runtime_field(rc.CacheConfig, "l1_max_entries")
    ttl_seconds: float = _runtime_field(rc.CacheConfig, "ttl_seconds")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.redis_url is not None and self.redis_url_secret_ref is not None:
            raise ValueError("cache sets redisUrl or redisUrlSecretRef, not both")
        return self

    @property
    def redis_enabled(self) -> bool:
        return self.redis_url is not None or self.redis_url_secret_ref is not None


class DatabaseSpec(base.CrModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                base.cel(
                    "self.poolMinSize <= self.poolMaxSize",
                    "database.poolMinSize must not exceed database.poolMaxSize",
                    ".poolMinSize",
                )
            ]
        }
    )

    dsn_secret_ref: SecretKeyRef = Field(
        ..., description="Secret key holding the PostgreSQL DSN (never put it in the spec)."
    )
    pool_min_size: int = _runtime_field(rc.DatabaseConfig, "pool_min_size")
    pool_max_size: int = _runtime_field(rc.DatabaseConfig, "pool_max_size")

    @model_validator(mode="after")
    def _pool(self) -> Self:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("database.poolMinSize must not exceed database.poolMaxSize")
        return self


class MonitoringSpec(base.CrModel):
    service_monitor: bool = Field(
        True,
        description="Create a ServiceMonitor (when the Prometheus Operator's CRD exists; "
        "status.monitoring says when it does not).",
    )
    interval: str = Field(
        "30s", pattern=DURATION_PATTERN, max_length=16, description="Scrape interval."
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Extra ServiceMonitor labels (Prometheus selectors)."
    )


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
    max_surge: IntOrPercent = Field(
        0,
        description="Extra pods during a RollingUpdate. 0 (the default) is GPU-safe: with no "
        "spare GPU a surge pod cannot schedule and the rollout would deadlock.",
    )
    max_unavailable: IntOrPercent = Field(
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


class NetworkPolicySpec(base.CrModel):
    enabled: bool = Field(
        True, description="Create a NetworkPolicy that opens only the runtime's HTTP port."
    )
    ingress_from: list[FreeForm] = Field(
        default_factory=list,
        max_length=32,
        description="networking/v1 NetworkPolicyPeer entries allowed in; empty allows all.",
    )


class ModelVolume(base.CrModel):
    claim_name: ResourceName = Field(
        ..., description="PersistentVolumeClaim with the model files, mounted read-only."
    )
    mount_path: str = Field(
        "/models", pattern=r"^/", max_length=512, description="Where the claim is mounted."
    )
    sub_path: str | None = Field(None, max_length=512, description="Sub-path inside the claim.")


class AnalyticsPipelineSpec(base.CrModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                base.cel(
                    "!(has(self.autoscaling) && self.autoscaling.enabled && "
                    "has(self.runtime.replicas))",
                    "runtime.replicas must not be set while autoscaling.enabled is true "
                    "(the HorizontalPodAutoscaler owns the replica count)",
                    ".runtime.replicas",
                ),
                base.cel(
                    "!has(self.engineCache) || !self.engineCache.enabled || "
                    "self.engineCache.accessMode == 'ReadWriteMany' || "
                    "((!has(self.runtime.replicas) || self.runtime.replicas <= 1) && "
                    "(!has(self.autoscaling) || !self.autoscaling.enabled || "
                    "self.autoscaling.maxReplicas <= 1))",
                    "engineCache.accessMode ReadWriteOnce serves one replica; use ReadWriteMany "
                    "(or engineCache.enabled false) for more replicas",
                    ".engineCache.accessMode",
                ),
                base.cel(
                    "!has(self.modelVolume) || "
                    "self.model.path.startsWith(self.modelVolume.mountPath + '/')",
                    "model.path must be a file inside modelVolume.mountPath",
                    ".model.path",
                ),
            ]
        }
    )

    paused: bool = Field(
        False, description="Stop reconciling: children are left exactly as they are."
    )
    model: rc.ModelConfig = Field(
        ..., description="The detector: file, format, input shape, precision and batching."
    )
    model_volume: ModelVolume | None = Field(
        None, description="Volume with the model file (unset: the file is in the image)."
    )
    runtime: RuntimeSpec = Field(..., description="The runtime pods: image, resources, placement.")
    engine_cache: EngineCacheSpec = Field(
        default_factory=EngineCacheSpec,
        description="PVC that keeps compiled engines across restarts.",
    )
    autoscaling: AutoscalingSpec = Field(
        default_factory=AutoscalingSpec, description="HorizontalPodAutoscaler settings."
    )
    cameras: list[rc.CameraConfig] = Field(
        default_factory=list,
        max_length=64,
        description="Camera streams to analyse, with counting lines and regions.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    cache: CacheSpec | None = Field(None, description="Result cache (L1 in process, L2 Redis).")
    database: DatabaseSpec | None = Field(None, description="PostgreSQL sink for detections.")
    monitoring: MonitoringSpec = Field(
        default_factory=MonitoringSpec, description="Prometheus scraping."
    )
    network_policy: NetworkPolicySpec = Field(
        default_factory=NetworkPolicySpec, description="NetworkPolicy for the runtime pods."
    )
    rollout: RolloutSpec = Field(
        default_factory=RolloutSpec, description="How pods are replaced on a change."
    )
    slo: rc.SloConfig = Field(
        default_factory=rc.SloConfig, description="Latency and throughput objectives."
    )
    gpu: rc.GpuConfig = Field(
        default_factory=rc.GpuConfig, description="CUDA allocator tuning inside the runtime."
    )

    @model_validator(mode="after")
    def _cross_field(self) -> Self:
        if self.autoscaling.enabled and self.runtime.replicas is not None:
            raise ValueError(
                "runtime.replicas must not be set while autoscaling.enabled is true "
                "(the HorizontalPodAutoscaler owns the replica count)"
            )
        if (
            self.engine_cache.enabled
            and self.engine_cache.access_mode is AccessMode.READ_WRITE_ONCE
            and (self.max_replicas > 1)
        ):
            raise ValueError(
                "engineCache.accessMode ReadWriteOnce serves one replica; use ReadWriteMany "
                "(or engineCache.enabled false) for more replicas"
            )
        if self.model_volume is not None and not self.model.path.startswith(
            self.model_volume.mount_path + "/"
        ):
            raise ValueError("model.path must be a file inside modelVolume.mountPath")
        names = [c.name for c in self.cameras]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"cameras[].name must be unique: {', '.join(dupes)}")
        return self

    @property
    def max_replicas(self) -> int:
        """The most replicas this spec can run (HPA maximum, or the fixed count)."""
        if self.autoscaling.enabled:
            return self.autoscaling.max_replicas
        return 1 if self.runtime.replicas is None else self.runtime.replicas

    def engine_cache_bytes(self) -> int:
        return int(quantities.parse(self.engine_cache.size))
