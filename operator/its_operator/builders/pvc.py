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


def journal(p: resource.Pipeline) -> meta.Manifest:
    """The journal claim every replica shares (``spec.journal.enabled``): always owned,
    so it goes with the pipeline."""
    j = p.spec.journal
    pvc_spec: dict[str, object] = {
        "accessModes": [j.access_mode.value],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": j.size}},
    }
    if j.storage_class_name is not None:
        pvc_spec["storageClassName"] = j.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta.metadata(p, meta.journal_claim_name(p)),
        "spec": pvc_spec,
    }


def build(p: resource.Pipeline) -> meta.Manifest:
    cache = p.spec.engine_cache
    owned = cache.retention is spec_storage.Retention.DELETE
    pvc_spec: dict[str, object] = {
        "accessModes": [cache.access_mode.value],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": cache.size}},
    }
    if cache.storage_class_name is not None:
        pvc_spec["storageClassName"] = cache.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta.metadata(p, meta.engine_cache_claim_name(p), owned=owned),
        "spec": pvc_spec,
    }
