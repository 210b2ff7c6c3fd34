"""The runtime's identity: a ServiceAccount, a Role for its membership Leases, a binding.

The runtime pods need the API for one thing only: each keeps a membership Lease
(``coordination.k8s.io/v1``) in its own namespace and lists its siblings' Leases to
compute who analyses which camera (``its_runtime.dataplane.membership``). So the Role
grants exactly get/list/watch/create/update/delete on ``leases``, in the pipeline's
namespace (a Role, never a ClusterRole): no Secrets, no pods, no other namespace.

``runtime.serviceAccountName`` overrides the account (e.g. one carrying cloud
workload-identity annotations): then no ServiceAccount is created, but the Role and
RoleBinding still are, bound to the named account, because without the Lease
permissions the replicas cannot share cameras. All three are owned by the pipeline and
applied and pruned like every other child. The operator must itself hold every verb it
grants (RBAC refuses to grant what the granter lacks), so ``manifests/base/rbac.yaml``
gives it the same Lease verbs.
"""

from __future__ import annotations

from its_operator.api import resource
from its_operator.builders import meta

API_VERSION = "rbac.authorization.k8s.io/v1"
GROUP = API_VERSION.split("/")[0]
LEASE_RULE = {
    "apiGroups": ["coordination.k8s.io"],
    "resources": ["leases"],
    "verbs": ["get", "list", "watch", "create", "update", "delete"],
}


def service_account(p: resource.Pipeline) -> meta.Manifest | None:
    """The runtime's own ServiceAccount, or None when the spec names an existing one."""
    if p.spec.runtime.service_account_name is not None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": meta.metadata(p, meta.runtime_identity_name(p)),
    }


def role(p: resource.Pipeline) -> meta.Manifest:
    return {
        "apiVersion": API_VERSION,
        "kind": "Role",
        "metadata": meta.metadata(p, meta.runtime_identity_name(p)),
        "rules": [LEASE_RULE],
    }


def role_binding(p: resource.Pipeline) -> meta.Manifest:
    return {
        "apiVersion": API_VERSION,
        "kind": "RoleBinding",
        "metadata": meta.metadata(p, meta.runtime_identity_name(p)),
        "roleRef": {"apiGroup": GROUP, "kind": "Role", "name": meta.runtime_identity_name(p)},
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": meta.runtime_service_account(p),
                "namespace": p.namespace,
            }
        ],
    }
