"""``spec.monitoring`` and ``spec.networkPolicy``: who reaches the runtime's HTTP port.

The ServiceMonitor (Prometheus scraping) and the NetworkPolicy (who may connect) are
two views of the same port, so a change to one is reviewed next to the other.
"""

from __future__ import annotations

from pydantic import Field

from its_operator.api import base, spec_fields


class MonitoringSpec(base.CrModel):
    service_monitor: bool = Field(
        True,
        description="Create a ServiceMonitor (when the Prometheus Operator's CRD exists; "
        "status.monitoring says when it does not).",
    )
    interval: str = Field(
        "30s", pattern=spec_fields.DURATION_PATTERN, max_length=16, description="Scrape interval."
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Extra ServiceMonitor labels (Prometheus selectors)."
    )


class NetworkPolicySpec(base.CrModel):
    enabled: bool = Field(
        True, description="Create a NetworkPolicy that opens only the runtime's HTTP port."
    )
    ingress_from: list[spec_fields.FreeForm] = Field(
        default_factory=list,
        max_length=32,
        description="networking/v1 NetworkPolicyPeer entries allowed in; empty allows all.",
    )
