"""The Lease calls of :mod:`its_runtime.dataplane.membership`, made with the official
``kubernetes`` client: in a pod through its ServiceAccount (in-cluster config), and
from a kubeconfig where ``KUBECONFIG`` names one (local runs play pods that way).

Kept apart from the protocol so that the protocol can be tested with a scripted API
as well as against a real API server, and so that only this module imports the
client (the runtime stays importable without a cluster).
"""

from __future__ import annotations

import os
from typing import Any, cast

from its_runtime.dataplane import membership


class KubernetesLeaseApi:
    """:class:`membership.LeaseApi` over ``coordination.k8s.io/v1``."""

    def __init__(self, api_client: Any, *, timeout_s: float = 5.0) -> None:
        from kubernetes import client

        self._client = api_client
        #: Per request: a hung API call must not outlast the fence.
        self.timeout_s = timeout_s
        self._leases = client.CoordinationV1Api(api_client)

    @classmethod
    def from_environment(cls) -> KubernetesLeaseApi:
        from kubernetes import client, config

        kubeconfig = os.environ.get("KUBECONFIG")
        if kubeconfig:
            api = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
            return cls(api)
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return cls(client.ApiClient())

    def _record(self, obj: Any) -> membership.LeaseRecord:
        return membership.record_from(self._client.sanitize_for_serialization(obj))

    def list(self, namespace: str, pipeline: str) -> list[membership.LeaseRecord]:
        got = self._leases.list_namespaced_lease(
            namespace,
            label_selector=f"{membership.PIPELINE_LABEL}={pipeline}",
            _request_timeout=self.timeout_s,
        )
        return [self._record(item) for item in got.items]

    def create(self, namespace: str, body: dict[str, Any]) -> membership.LeaseRecord:
        from kubernetes.client.exceptions import ApiException

        try:
            return self._record(
                self._leases.create_namespaced_lease(
                    namespace, cast(Any, body), _request_timeout=self.timeout_s
                )
            )
        except ApiException as exc:
            if exc.status == 409:  # a Lease of a previous run of this pod name
                name = body["metadata"]["name"]
                current = self._record(
                    self._leases.read_namespaced_lease(
                        name, namespace, _request_timeout=self.timeout_s
                    )
                )
                body["metadata"]["resourceVersion"] = current.resource_version
                return self.replace(namespace, name, body)
            raise

    def replace(self, namespace: str, name: str, body: dict[str, Any]) -> membership.LeaseRecord:
        from kubernetes.client.exceptions import ApiException

        try:
            return self._record(
                self._leases.replace_namespaced_lease(
                    name, namespace, cast(Any, body), _request_timeout=self.timeout_s
                )
            )
        except ApiException as exc:
            if exc.status in (404, 409):
                raise membership.LeaseConflictError(f"lease {name}: {exc.reason}") from None
            raise

    def delete(self, namespace: str, name: str, resource_version: str | None) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        pre = client.V1Preconditions(resource_version=resource_version)
        try:
            self._leases.delete_namespaced_lease(
                name,
                namespace,
                body=client.V1DeleteOptions(preconditions=pre),
                _request_timeout=self.timeout_s,
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise
