"""The operator's API calls: server-side apply, status apply, a few reads, Events.

One generic path-based client over the official ``kubernetes`` client instead of a
typed API class per kind: every child is applied the same way (``PATCH`` with
``application/apply-patch+yaml``, one field manager, ``force=true``) and answers come
back as plain dicts (no model parsing, which is slow and drops unknown fields). The
client is synchronous, so calls run in a dedicated thread pool sized with the HTTP
connection pool; the event loop (kopf's) never blocks on the network.

Every write is counted in Prometheus (``its_operator_api_writes_total``), so "zero
writes when nothing changed" is observable in production, not only in tests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import functools
import json
import secrets
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from kubernetes import client as k8s_client

from its_operator.api import resource
from its_operator.handlers import metrics
from its_runtime import redaction

FIELD_MANAGER = "its-operator"
USER_AGENT = "its-operator/0.1.0"
APPLY = "application/apply-patch+yaml"
_T = TypeVar("_T")

#: kind -> plural, for every kind the operator reads or writes.
PLURALS = {
    "ConfigMap": "configmaps",
    "Secret": "secrets",
    "Service": "services",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "Pod": "pods",
    "Event": "events",
    "Deployment": "deployments",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "NetworkPolicy": "networkpolicies",
    "ServiceMonitor": "servicemonitors",
    "ServiceAccount": "serviceaccounts",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "Lease": "leases",
    resource.KIND: resource.PLURAL,
    "KopfPeering": "kopfpeerings",
    "ClusterKopfPeering": "clusterkopfpeerings",
}


class ApiError(Exception):
    """A refused request, with the API server's own message (it names the field)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def path(
    api_version: str,
    kind: str,
    namespace: str | None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    out = base + (f"/namespaces/{namespace}" if namespace else "") + f"/{PLURALS[kind]}"
    if name:
        out += f"/{name}"
    if subresource:
        out += f"/{subresource}"
    return out


def _error(status: int, reason: str, body: bytes | None) -> ApiError:
    try:
        parsed = json.loads(body) if body else {}
    except (TypeError, ValueError):
        parsed = {}
    if not isinstance(parsed, dict):
        parsed = {}
    return ApiError(
        status,
        str(parsed.get("reason") or reason or "Error"),
        str(parsed.get("message") or reason or body),
    )


class FencedError(Exception):
    """A write refused locally: this replica does not lead the write's namespace now."""


def _namespace_of(url: str) -> str | None:
    parts = url.split("/")
    return parts[parts.index("namespaces") + 1] if "namespaces" in parts else None


class Kube:
    """Async facade over one ``kubernetes.client.ApiClient``."""

    def __init__(self, api: k8s_client.ApiClient, *, threads: int = 16, identity: str = "") -> None:
        self.api = api
        #: Asked before every write with its namespace (leader election's fence): a
        #: replica that stopped leading sends nothing, even from a reconcile mid-way.
        self.fence: Callable[[str | None], bool] | None = None
        # The identity in the user agent tells replicas apart in the audit log.
        api.user_agent = f"{USER_AGENT} ({identity})" if identity else USER_AGENT
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="kube")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def _call(
        self,
        method: str,
        url: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        serialized = self.api.param_serialize(
            method=method,
            resource_path=url,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*serialized, _request_timeout=30)
        data: bytes | None = response.read()  # type: ignore[no-untyped-call]
        if response.status >= 400:
            raise _error(int(response.status), str(response.reason), data)
        return json.loads(data) if data else None

    async def _write(
        self, verb: str, kind: str, method: str, url: str, fenced: bool = True, **kwargs: Any
    ) -> dict[str, Any]:
        if fenced and self.fence is not None and not self.fence(_namespace_of(url)):
            where = _namespace_of(url) or "the cluster"
            raise FencedError(f"not leader for {where}: {verb} {kind}")
        metrics.API_WRITES.labels(kind=kind, verb=verb).inc()
        out: dict[str, Any] = await self._run(functools.partial(self._call, method, url, **kwargs))
        return out

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply ``manifest`` as the operator's single field manager."""
        meta = manifest["metadata"]
        url = path(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
        return await self._write(
            "apply",
            manifest["kind"],
            "PATCH",
            url,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            body=dict(manifest),
            content_type=APPLY,
        )

    async def apply_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        url = path(resource.API_VERSION, resource.KIND, namespace, name, "status")
        body = {
            "apiVersion": resource.API_VERSION,
            "kind": resource.KIND,
            "metadata": {"name": name, "namespace": namespace},
            "status": dict(status),
        }
        await self._write(
            "apply-status",
            resource.KIND,
            "PATCH",
            url,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            body=body,
            content_type=APPLY,
        )

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        url = path(api_version, kind, namespace, name)
        try:
            await self._write(
                "delete", kind, "DELETE", url, body={"propagationPolicy": "Background"}
            )
        except ApiError as exc:
            if exc.status != 404:
                raise

    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        url = path(api_version, kind, namespace, name)
        try:
            out: dict[str, Any] = await self._run(functools.partial(self._call, "GET", url))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return out

    async def list(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str
    ) -> list[dict[str, Any]]:
        """Objects matching ``label_selector`` in ``namespace`` (None: every namespace)."""
        url = path(api_version, kind, namespace)
        out = await self._run(
            functools.partial(self._call, "GET", url, query=[("labelSelector", label_selector)])
        )
        items: list[dict[str, Any]] = out.get("items", [])
        return items

    async def create(self, manifest: Mapping[str, Any], *, fenced: bool = True) -> bool:
        """Create ``manifest``; False if it already exists."""
        meta = manifest["metadata"]
        url = path(manifest["apiVersion"], manifest["kind"], meta.get("namespace"))
        try:
            await self._write(
                "create", manifest["kind"], "POST", url, fenced=fenced, body=dict(manifest)
            )
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def replace(self, manifest: Mapping[str, Any], *, fenced: bool = True) -> dict[str, Any]:
        """PUT ``manifest`` (its ``resourceVersion`` guards it: 409 if it changed)."""
        meta = manifest["metadata"]
        url = path(manifest["apiVersion"], manifest["kind"], meta.get("namespace"), meta["name"])
        return await self._write(
            "update", manifest["kind"], "PUT", url, fenced=fenced, body=dict(manifest)
        )

    async def has_resource(self, group: str, version: str, plural: str) -> bool:
        """Whether the API server serves ``group/version`` ``plural`` (discovery)."""
        try:
            out = await self._run(functools.partial(self._call, "GET", f"/apis/{group}/{version}"))
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return any(r.get("name") == plural for r in out.get("resources", []))

    async def event(
        self,
        involved: Mapping[str, Any],
        *,
        type: str,
        reason: str,
        message: str,
        component: str,
    ) -> None:
        """Post a core/v1 Event about ``involved`` (a CR body)."""
        meta = involved["metadata"]
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{secrets.token_hex(8)}",
                "namespace": meta["namespace"],
            },
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", resource.API_VERSION),
                "kind": involved.get("kind", resource.KIND),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type,
            "reason": reason,
            "message": redaction.redact(message)[:1024],
            "source": {"component": component},
            "reportingComponent": component,
            "reportingInstance": component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        url = path("v1", "Event", meta["namespace"])
        await self._write("create", "Event", "POST", url, body=body)
