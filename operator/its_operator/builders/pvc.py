"""The engine-cache PersistentVolumeClaim (compiled engines survive pod restarts).

Retention is expressed through ownership alone: ``Delete`` makes the pipeline the
claim's controller (garbage collection removes it with the pipeline), ``Retain``
leaves it unowned (it outlives the pipeline, and a pipeline re-created with the same
name adopts it and its engines). Switching from Delete to Retain drops the
ownerReference on the next apply, because server-side apply removes what the
operator's field manager no longer sets.
"""

from __future__ import annotations

from its_operator.api import resource, spec_storage
from its_operator.builders import meta


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
