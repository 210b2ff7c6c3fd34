"""The ClusterIP Service in front of the runtime pods.

The runtime serves its API, probes and ``/metrics`` on one HTTP port; the Service
names it twice (``http`` and ``metrics``) so clients and scrapers select by name and
the ServiceMonitor does not depend on the API port.
"""

from __future__ import annotations

from its_operator.api import resource
from its_operator.builders import deployment, meta

HTTP_PORT = deployment.HTTP_PORT
METRICS_PORT = 9090


def build(p: resource.Pipeline) -> meta.Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta.metadata(p, meta.service_name(p)),
        "spec": {
            "type": "ClusterIP",
            "selector": meta.selector_labels(p),
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "http", "protocol": "TCP"},
            ],
        },
    }


def endpoint(p: resource.Pipeline) -> str:
    return f"http://{meta.service_name(p)}.{p.namespace}.svc:{HTTP_PORT}"
