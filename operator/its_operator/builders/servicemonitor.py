"""The Prometheus Operator ServiceMonitor that scrapes the runtime's ``/metrics``.

Rendered only when the ``monitoring.coreos.com/v1`` ServiceMonitor CRD exists; the
handlers decide that and report it in ``status.monitoring``.
"""

from __future__ import annotations

from its_operator.api import resource
from its_operator.builders import meta

API_VERSION = "monitoring.coreos.com/v1"
GROUP, VERSION = API_VERSION.split("/")
PLURAL = "servicemonitors"


def build(p: resource.Pipeline) -> meta.Manifest:
    m = meta.metadata(p, meta.service_name(p))
    m["labels"] = {**p.spec.monitoring.labels, **m["labels"]}
    return {
        "apiVersion": API_VERSION,
        "kind": "ServiceMonitor",
        "metadata": m,
        "spec": {
            "selector": {"matchLabels": meta.selector_labels(p)},
            "endpoints": [
                {"port": "metrics", "path": "/metrics", "interval": p.spec.monitoring.interval}
            ],
        },
    }
