"""``spec`` of an AnalyticsPipeline: what a user (or a GitOps repo) asks for.

The parts that the runtime reads as is (``model``, ``cameras``, ``slo``, ``gpu``) are
the runtime's own config classes, imported, not copied: the CRD schema, the operator
and the runtime cannot disagree about them. Parts that differ between a CR and the
runtime file (Secrets are referenced in a CR, read from the environment at runtime)
are operator models that borrow the runtime's field definitions (bounds, defaults,
descriptions) through :func:`spec_fields.runtime_field`.

Every cross-field rule is written twice, side by side: as CEL
(``x-kubernetes-validations``, so the API server rejects a bad CR at apply time) and
as a pydantic validator (so the operator, the unit tests and offline tooling reject
the same spec with the same message). Messages name the field, relative to ``spec``.

The spec is split by topic, one module per top-level field group (``spec_runtime``,
``spec_storage``, ``spec_autoscaling``, ``spec_rollout``, ``spec_backends``,
``spec_network``) over the shared grammars in ``spec_fields``. This module keeps the
root model, because the rules that span groups (replicas vs. autoscaling, a
ReadWriteOnce cache or journal vs. more than one replica, the model file vs. its
volume) can only be written where all groups are visible.
"""

from __future__ import annotations

import math
from typing import Self

from pydantic import ConfigDict, Field, model_validator

from its_operator.api import (
    base,
    quantities,
    spec_autoscaling,
    spec_backends,
    spec_network,
    spec_rollout,
    spec_runtime,
    spec_storage,
)
from its_runtime import config as rc

#: Cameras per pipeline: what the design is measured for (ConfigMap < 1 MiB, status
#: bounded, the API server's CEL cost budget); tests/operator/unit/test_camera_sharing.py.
MAX_CAMERAS = 1000


#: CEL: the spec never runs more than one replica (fixed count, or the HPA's maximum
#: raised to the replica floor, ``max_replicas``).
_ONE_REPLICA = (
    "((!has(self.runtime.replicas) || self.runtime.replicas <= 1) && "
    "(!has(self.autoscaling) || !self.autoscaling.enabled || "
    "(self.autoscaling.maxReplicas <= 1 && (!has(self.cameras) || "
    "size(self.cameras) <= self.runtime.maxCamerasPerReplica))))"
)


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
                    "self.engineCache.accessMode == 'ReadWriteMany' || " + _ONE_REPLICA,
                    "engineCache.accessMode ReadWriteOnce serves one replica; use ReadWriteMany "
                    "(or engineCache.enabled false) for more replicas",
                    ".engineCache.accessMode",
                ),
                base.cel(
                    "!has(self.journal) || !self.journal.enabled || "
                    "self.journal.accessMode == 'ReadWriteMany' || " + _ONE_REPLICA,
                    "journal.accessMode ReadWriteOnce serves one replica; use ReadWriteMany "
                    "(or journal.enabled false) for more replicas",
                    ".journal.accessMode",
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
    model_volume: spec_storage.ModelVolume | None = Field(
        None, description="Volume with the model file (unset: the file is in the image)."
    )
    runtime: spec_runtime.RuntimeSpec = Field(
        ..., description="The runtime pods: image, resources, placement."
    )
    engine_cache: spec_storage.EngineCacheSpec = Field(
        default_factory=spec_storage.EngineCacheSpec,
        description="PVC that keeps compiled engines across restarts.",
    )
    journal: spec_storage.JournalSpec = Field(
        default_factory=spec_storage.JournalSpec,
        description="Where rows wait while PostgreSQL is down; shared, a deleted pod's "
        "rows survive it.",
    )
    autoscaling: spec_autoscaling.AutoscalingSpec = Field(
        default_factory=spec_autoscaling.AutoscalingSpec,
        description="HorizontalPodAutoscaler settings.",
    )
    cameras: list[rc.CameraConfig] = Field(
        default_factory=list,
        max_length=MAX_CAMERAS,
        description="Camera streams to analyse, with counting lines and regions. Each "
        "camera is analysed by exactly one runtime replica (see runtime.cameraLease).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    cache: spec_backends.CacheSpec | None = Field(
        None, description="Result cache (L1 in process, L2 Redis)."
    )
    database: spec_backends.DatabaseSpec | None = Field(
        None, description="PostgreSQL sink for detections."
    )
    monitoring: spec_network.MonitoringSpec = Field(
        default_factory=spec_network.MonitoringSpec, description="Prometheus scraping."
    )
    network_policy: spec_network.NetworkPolicySpec = Field(
        default_factory=spec_network.NetworkPolicySpec,
        description="NetworkPolicy for the runtime pods.",
    )
    rollout: spec_rollout.RolloutSpec = Field(
        default_factory=spec_rollout.RolloutSpec, description="How pods are replaced on a change."
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
            and self.engine_cache.access_mode is spec_storage.AccessMode.READ_WRITE_ONCE
            and (self.max_replicas > 1)
        ):
            raise ValueError(
                "engineCache.accessMode ReadWriteOnce serves one replica; use ReadWriteMany "
                "(or engineCache.enabled false) for more replicas"
            )
        if (
            self.journal.enabled
            and self.journal.access_mode is spec_storage.AccessMode.READ_WRITE_ONCE
            and self.max_replicas > 1
        ):
            raise ValueError(
                "journal.accessMode ReadWriteOnce serves one replica; use ReadWriteMany "
                "(or journal.enabled false) for more replicas"
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
        """The most replicas this spec can run (HPA maximum, raised to the replica
        floor, or the fixed count)."""
        if self.autoscaling.enabled:
            return max(self.autoscaling.max_replicas, self.replica_floor)
        return self.replicas

    @property
    def replicas(self) -> int:
        """The fixed replica count (autoscaling off; unset means 1)."""
        return 1 if self.runtime.replicas is None else self.runtime.replicas

    @property
    def replica_floor(self) -> int:
        """Fewest replicas that can hold every camera: ceil(cameras / capacity)."""
        return math.ceil(len(self.cameras) / self.runtime.max_cameras_per_replica)

    def engine_cache_bytes(self) -> int:
        return int(quantities.parse(self.engine_cache.size))
