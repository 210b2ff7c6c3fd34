"""Every Prometheus metric the operator exports, defined in one place.

Reconciles (count by result, duration), API writes by kind and verb (the number
that must stay at zero while nothing changes), the work queue's depth, whether this
replica leads (its Lease) and what it leaves to other installations. The process
serves them on ``--metrics-port`` (``its_operator.main``).
"""

from __future__ import annotations

import prometheus_client

PREFIX = "its_operator"

RECONCILES = prometheus_client.Counter(
    f"{PREFIX}_reconciles_total",
    "Reconciles of AnalyticsPipelines, by result (ok, requeue, error).",
    ["result"],
)
RECONCILE_ERRORS = prometheus_client.Counter(
    f"{PREFIX}_reconcile_errors_total",
    "Reconciles that raised, by exception type.",
    ["error"],
)
RECONCILE_SECONDS = prometheus_client.Histogram(
    f"{PREFIX}_reconcile_duration_seconds",
    "Wall time of one reconcile.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
API_WRITES = prometheus_client.Counter(
    f"{PREFIX}_api_writes_total",
    "Write requests sent to the API server, by kind and verb.",
    ["kind", "verb"],
)
QUEUE_DEPTH = prometheus_client.Gauge(
    f"{PREFIX}_queue_depth", "Pipelines waiting in the work queue (due or delayed)."
)
ACTIVE = prometheus_client.Gauge(
    f"{PREFIX}_active", "1 while this replica acts on anything, 0 while it stands by."
)
LEADER = prometheus_client.Gauge(
    f"{PREFIX}_leader",
    "1 while this replica holds the leader-election Lease (namespace/name) and renews it.",
    ["lease"],
)
YIELDED = prometheus_client.Gauge(
    f"{PREFIX}_yielded_namespaces",
    "Namespaces this cluster-wide leader leaves to a namespaced installation holding them.",
)
RIVALS = prometheus_client.Gauge(
    f"{PREFIX}_rival_installations",
    "Other live cluster-wide installations (their own cluster Lease) this leader sees; "
    "of overlapping cluster-wide installations only the first Lease acts.",
)
