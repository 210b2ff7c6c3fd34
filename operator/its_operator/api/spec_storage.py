"""``spec.engineCache``, ``spec.journal`` and ``spec.modelVolume``: the pods' volumes.

Both are PersistentVolumeClaims, and a claim cannot do what a Deployment can (shrink,
change its class or access mode), so the CEL transition rules (``oldSelf``) that
make the API server refuse such an edit are all here, next to the fields.
"""

from __future__ import annotations

import enum

from pydantic import Field, field_validator

from its_operator.api import base, spec_fields


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
    size: spec_fields.Quantity = Field(
        "20Gi",
        description="PVC size; it may only grow. The runtime evicts past 90% of it.",
        json_schema_extra={
            "x-kubernetes-validations": spec_fields.volume_size_rules("engineCache.size")
        },
    )

    @field_validator("size")
    @classmethod
    def _size(cls, value: str) -> str:
        return spec_fields.check_volume_size(value, "engineCache.size")

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


class ModelVolume(base.CrModel):
    claim_name: spec_fields.ResourceName = Field(
        ..., description="PersistentVolumeClaim with the model files, mounted read-only."
    )
    mount_path: str = Field(
        "/models", pattern=r"^/", max_length=512, description="Where the claim is mounted."
    )
    sub_path: str | None = Field(None, max_length=512, description="Sub-path inside the claim.")


class JournalSpec(base.CrModel):
    """Where the runtime spools rows while PostgreSQL is down.

    Disabled: an emptyDir per pod, so rows spooled by a pod that is deleted (a
    rollout, a scale-down, an eviction) before the database is back are lost (and
    counted). Enabled: one claim shared by every replica, mounted at the journal
    root; each pod keeps its journal in ``<root>/<pod>/`` and a surviving or
    replacement pod adopts and replays a deleted pod's journal under its file lock
    (``its_runtime.dataplane.store.adoption``). More than one replica needs
    ReadWriteMany, on a file system whose ``flock`` works across nodes (CephFS,
    NFSv4). The claim is owned by the pipeline: deleting the pipeline deletes it."""

    enabled: bool = Field(
        False, description="Keep the journal on a claim shared by all replicas (false: emptyDir)."
    )
    size: spec_fields.Quantity = Field(
        "4Gi",
        description="PVC size; it may only grow. Holds up to one full journal (256Mi) per replica.",
        json_schema_extra={
            "x-kubernetes-validations": spec_fields.volume_size_rules("journal.size")
        },
    )

    @field_validator("size")
    @classmethod
    def _size(cls, value: str) -> str:
        return spec_fields.check_volume_size(value, "journal.size")

    storage_class_name: str | None = Field(
        None,
        max_length=253,
        description="StorageClass of the PVC (unset: the cluster default). Immutable.",
        json_schema_extra={
            "x-kubernetes-validations": [
                base.cel("self == oldSelf", "journal.storageClassName is immutable")
            ]
        },
    )
    access_mode: AccessMode = Field(
        AccessMode.READ_WRITE_MANY,
        description="ReadWriteMany (shared by replicas; the default) or ReadWriteOnce "
        "(one replica). Immutable.",
        json_schema_extra={
            "x-kubernetes-validations": [
                base.cel("self == oldSelf", "journal.accessMode is immutable")
            ]
        },
    )
