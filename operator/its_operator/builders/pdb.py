"""The PodDisruptionBudget: node drains evict at most one runtime pod at a time.

``maxUnavailable: 1`` (not ``minAvailable``) so a single-replica pipeline can still
be drained, and ``unhealthyPodEvictionPolicy: AlwaysAllow`` so a pod that never got
ready (e.g. a bad model) cannot block a drain.
"""

from __future__ import annotations

from its_operator.api import resource
from its_operator.builders import meta


def build(p: resource.Pipeline) -> meta.Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta.metadata(p, meta.deployment_name(p)),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": meta.selector_labels(p)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
