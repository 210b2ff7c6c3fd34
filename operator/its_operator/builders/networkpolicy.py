"""The NetworkPolicy: only the runtime's HTTP port accepts connections.

Ingress is limited to that port (from ``networkPolicy.ingressFrom`` peers, or from
anywhere when that list is empty); egress stays open because cameras, Redis and
PostgreSQL live wherever the user runs them.
"""

from __future__ import annotations

from typing import Any

from its_operator.api import resource
from its_operator.builders import deployment, meta


def build(p: resource.Pipeline) -> meta.Manifest:
    rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": deployment.HTTP_PORT}]}
    if p.spec.network_policy.ingress_from:
        rule["from"] = list(p.spec.network_policy.ingress_from)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta.metadata(p, meta.deployment_name(p)),
        "spec": {
            "podSelector": {"matchLabels": meta.selector_labels(p)},
            "policyTypes": ["Ingress"],
            "ingress": [rule],
        },
    }
