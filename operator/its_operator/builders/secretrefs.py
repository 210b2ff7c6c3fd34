"""Which Secrets (and keys) the runtime pods need, read from the spec.

The handlers check exactly these before they report Ready (a pod with a missing
Secret never starts, and on some nodes, such as kwok's, nothing else would say so),
and fold their versions into the pod template so a rotated Secret rolls the pods.
"""

from __future__ import annotations

from its_operator.api import spec as spec_module
from its_operator.api import spec_fields


def needed(spec: spec_module.AnalyticsPipelineSpec) -> dict[str, frozenset[str]]:
    """Secret name -> keys the pods read from it (empty for image pull Secrets)."""
    out: dict[str, set[str]] = {}

    def add(ref: spec_fields.SecretKeyRef) -> None:
        out.setdefault(ref.name, set()).add(ref.key)

    if spec.database is not None:
        add(spec.database.dsn_secret_ref)
    if spec.cache is not None and spec.cache.redis_url_secret_ref is not None:
        add(spec.cache.redis_url_secret_ref)
    for cam in spec.cameras:
        if cam.url_secret_ref is not None:
            out.setdefault(cam.url_secret_ref.name, set()).add(cam.url_secret_ref.key)
    for env in spec.runtime.env:
        if env.value_from is not None and env.value_from.secret_key_ref is not None:
            add(env.value_from.secret_key_ref)
    for name in spec.runtime.image_pull_secrets:
        out.setdefault(name, set())
    return {name: frozenset(keys) for name, keys in sorted(out.items())}
