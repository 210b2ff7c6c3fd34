"""Names, labels, owner references and the desired-state stamp shared by all children.

Every child carries the ``app.kubernetes.io/*`` labels (the operator watches its
children by ``managed-by`` and finds the owner by ``instance``) and a controller
ownerReference, so garbage collection removes it with the pipeline. The one
exception is an engine-cache PVC with ``retention: Retain``: it is never owned, so
deleting the pipeline cannot delete it, and no finalizer is needed for that.

``stamp`` records a hash of the rendered object in an annotation. The handlers
compare it with the live object to see that the spec changed (including fields that
were removed, which a field-by-field comparison cannot see) without writing.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from its_operator.api import resource

Manifest = dict[str, Any]

MANAGED_BY = "its-operator"
PART_OF = "its-camera-analytics"
APP_NAME = "its-runtime"
COMPONENT = "inference"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
#: Hash of the rendered child; see the module docstring.
DESIRED_HASH = "its.ai/desired-hash"
CONFIG_HASH = "its.ai/config-hash"
SECRETS_VERSION = "its.ai/secrets-version"


def deployment_name(p: resource.Pipeline) -> str:
    return p.name


def service_name(p: resource.Pipeline) -> str:
    return p.name


def configmap_name(p: resource.Pipeline) -> str:
    return f"{p.name}-config"


def engine_cache_claim_name(p: resource.Pipeline) -> str:
    return f"{p.name}-engine-cache"


def journal_claim_name(p: resource.Pipeline) -> str:
    return f"{p.name}-journal"


def runtime_identity_name(p: resource.Pipeline) -> str:
    """The runtime's ServiceAccount (unless the spec names one), Role and RoleBinding."""
    return f"{p.name}-runtime"


def runtime_service_account(p: resource.Pipeline) -> str:
    """The ServiceAccount the runtime pods run as."""
    return p.spec.runtime.service_account_name or runtime_identity_name(p)


def selector_labels(p: resource.Pipeline) -> dict[str, str]:
    """The immutable Deployment selector: never add to it."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: p.name}


def labels(p: resource.Pipeline) -> dict[str, str]:
    return {
        **selector_labels(p),
        LABEL_COMPONENT: COMPONENT,
        LABEL_PART_OF: PART_OF,
        LABEL_MANAGED_BY: MANAGED_BY,
    }


def owner_reference(p: resource.Pipeline) -> dict[str, Any]:
    return {
        "apiVersion": resource.API_VERSION,
        "kind": resource.KIND,
        "name": p.name,
        "uid": p.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(p: resource.Pipeline, name: str, *, owned: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": p.namespace, "labels": labels(p)}
    if owned:
        meta["ownerReferences"] = [owner_reference(p)]
    return meta


def canonical_hash(obj: Any, length: int = 16) -> str:
    """A short, stable hash of JSON-able data (sorted keys, no whitespace)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def stamp(manifest: Manifest) -> Manifest:
    """A copy of ``manifest`` with its own hash in the ``DESIRED_HASH`` annotation."""
    out = copy.deepcopy(manifest)
    annotations = out["metadata"].setdefault("annotations", {})
    annotations.pop(DESIRED_HASH, None)
    annotations[DESIRED_HASH] = canonical_hash(out)
    return out
