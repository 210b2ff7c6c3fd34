"""The PersistentVolumeClaims: the engine cache (compiled engines survive pod
restarts) and the shared journal (a deleted pod's spooled rows survive it).

Retention is expressed through ownership alone: ``Delete`` makes the pipeline the
claim's controller (garbage collection removes it with the pipeline), ``Retain``
leaves it unowned (it outlives the pipeline, and a pipeline re-created with the same
name adopts it and its engines). Switching from Delete to Retain drops the
ownerReference on the next apply, because server-side apply removes what the
operator's field manager no longer sets. The journal claim is always owned: rows
left in it when the pipeline itself is deleted have nowhere to go.
"""

from __future__ import annotations

from its_operator.api import resource, spec_storage
from its_operator.builders import meta


def _claim(
    p: resource.Pipeline,
    name: str,
    *,
    access_mode: spec_storage.AccessMode,
    size: str,
    storage_class_name: str | None,
    owned: bool = True,
) -> meta.Manifest:
    pvc_spec: dict[str, object] = {
        "accessModes": [access_mode.value],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": size}},
    }
    if storage_class_name is not None:
        pvc_spec["storageClassName"] = storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta.metadata(p, name, owned=owned),
        "spec": pvc_spec,
    }


def journal(p: resource.Pipeline) -> meta.Manifest:
    """The journal claim every replica shares (``spec.journal.enabled``): always owned,
    so it goes with the pipeline."""
    j = p.spec.journal
    return _claim(
        p,
        meta.journal_claim_name(p),
        access_mode=j.access_mode,
        size=j.size,
        storage_class_name=j.storage_class_name,
    )


def build(p: resource.Pipeline) -> meta.Manifest:
    cache = p.spec.engine_cache
    return _claim(
        p,
        meta.engine_cache_claim_name(p),
        access_mode=cache.access_mode,
        size=cache.size,
        storage_class_name=cache.storage_class_name,
        owned=cache.retention is spec_storage.Retention.DELETE,
    )
