"""The full desired set of children for one pipeline, in apply order.

Order matters only for a first start: the ConfigMap, the PVC and the runtime's
ServiceAccount exist before the Deployment's pods look for them, the Role before the
RoleBinding that refers to it (RBAC checks a binding against the Role's rules), and
the Deployment before its HPA. Each child is stamped (``meta.stamp``) with the hash
the handlers compare against.
"""

from __future__ import annotations

import dataclasses

from its_operator.api import resource
from its_operator.builders import (
    configmap,
    deployment,
    hpa,
    meta,
    networkpolicy,
    pdb,
    pvc,
    rbac,
    service,
    servicemonitor,
)

#: Every kind the operator may create, as (apiVersion, kind).
KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "ConfigMap"),
    ("v1", "PersistentVolumeClaim"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    (rbac.API_VERSION, "Role"),
    (rbac.API_VERSION, "RoleBinding"),
    ("apps/v1", "Deployment"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    (servicemonitor.API_VERSION, "ServiceMonitor"),
)


@dataclasses.dataclass(frozen=True)
class Observed:
    """Facts from the cluster that shape the children (found by the handlers)."""

    service_monitor_crd: bool = False
    secrets_version: str = ""


def desired(p: resource.Pipeline, observed: Observed) -> list[meta.Manifest]:
    spec = p.spec
    cm = configmap.build(p)
    out = [cm]
    if spec.engine_cache.enabled:
        out.append(pvc.build(p))
    if spec.journal.enabled:
        out.append(pvc.journal(p))
    out.append(service.build(p))
    account = rbac.service_account(p)
    if account is not None:
        out.append(account)
    out += [rbac.role(p), rbac.role_binding(p)]
    out.append(
        deployment.build(
            p, config_hash=configmap.config_hash(cm), secrets_version=observed.secrets_version
        )
    )
    if spec.autoscaling.enabled:
        out.append(hpa.build(p))
    out.append(pdb.build(p))
    if spec.network_policy.enabled:
        out.append(networkpolicy.build(p))
    if spec.monitoring.service_monitor and observed.service_monitor_crd:
        out.append(servicemonitor.build(p))
    return [meta.stamp(m) for m in out]
