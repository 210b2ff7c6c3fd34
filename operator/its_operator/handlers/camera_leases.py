"""The runtime replicas' membership Leases, read in one request per period for all.

``status.cameras`` is computed from these Leases (``builders.cameras``). They are
polled, not watched: every replica renews its Lease every ``renewPeriodSeconds``, so
a watch would deliver one event per replica every few seconds, and almost none of
them matters (only a join, a leave or an expiry changes the assignment; an expiry
is not an event at all, it is the absence of one). One LIST with the label selector
``its.ai/pipeline`` (per namespace served, or once for the cluster) every
``poll_seconds`` serves every pipeline; its cost grows with replicas, not with
pipelines or cameras, and a reconcile reads the last result without a request.

After each poll, :func:`changed` names the pipelines whose live members differ from
those their status shows, and only those are queued, so a join, a leave or an
expiry reaches status (and its Event) within one period, and a quiet cluster sees
no writes. Until the first poll has answered, reconciles keep the stored
``status.cameras`` as it is (an operator restart must not report "0 assigned").
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from its_operator.api import status as st
from its_operator.builders import cameras as cameras_builder
from its_operator.handlers import cache, kube
from its_runtime.dataplane import membership

logger = logging.getLogger(__name__)

API_VERSION = "coordination.k8s.io/v1"
#: How often the Leases are listed (a fraction of the default 10 s Lease duration).
POLL_SECONDS = 5.0


def _slim(lease: Mapping[str, Any]) -> dict[str, Any]:
    """What status needs of a Lease: name, pipeline, capacity, holder and timing."""
    meta = lease.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    kept = {}
    if membership.CAPACITY_ANNOTATION in annotations:
        kept[membership.CAPACITY_ANNOTATION] = annotations[membership.CAPACITY_ANNOTATION]
    return {
        "metadata": {
            "name": meta.get("name", ""),
            "namespace": meta.get("namespace", ""),
            "labels": {
                membership.PIPELINE_LABEL: (meta.get("labels") or {}).get(
                    membership.PIPELINE_LABEL, ""
                )
            },
            "annotations": kept,
        },
        "spec": dict(lease.get("spec") or {}),
    }


class LeaseSnapshot:
    """The last listing of every pipeline's membership Leases, by (namespace, pipeline)."""

    def __init__(self, client: kube.Kube, namespaces: list[str] | None) -> None:
        self.kube = client
        self.namespaces = namespaces
        self._by_key: dict[cache.Key, list[dict[str, Any]]] | None = None
        #: key -> the live members last queued for, so an unchanged mismatch (a
        #: status that cannot be written) is not queued again every period.
        self._queued: dict[cache.Key, tuple[tuple[str, int], ...]] = {}

    @property
    def loaded(self) -> bool:
        return self._by_key is not None

    def of(self, key: cache.Key) -> list[dict[str, Any]] | None:
        """The pipeline's Leases at the last poll; None before the first poll answered."""
        if self._by_key is None:
            return None
        return list(self._by_key.get(key, ()))

    async def refresh(self) -> None:
        """List the Leases again; on failure keep the previous listing (and log)."""
        scopes: list[str | None] = [None] if self.namespaces is None else list(self.namespaces)
        found: dict[cache.Key, list[dict[str, Any]]] = {}
        try:
            for namespace in scopes:
                items = await self.kube.list(
                    API_VERSION, "Lease", namespace, membership.PIPELINE_LABEL
                )
                for item in items:
                    lease = _slim(item)
                    meta = lease["metadata"]
                    key = (meta["namespace"], meta["labels"][membership.PIPELINE_LABEL])
                    found.setdefault(key, []).append(lease)
        except kube.ApiError as exc:
            logger.warning("cannot list membership Leases: %s", exc)
            return
        self._by_key = found

    def changed(
        self, pipelines: Iterable[tuple[cache.Key, Mapping[str, Any]]], now: datetime.datetime
    ) -> list[cache.Key]:
        """Pipelines (key, body) whose live members differ from their status' members."""
        out: list[cache.Key] = []
        seen: set[cache.Key] = set()
        for key, body in pipelines:
            seen.add(key)
            view = cameras_builder.live_view(self.of(key) or [], now)
            live = tuple((m.name, m.capacity) for m in view.members)[: st.MEMBERS_MAX]
            status = (body.get("status") or {}).get("cameras")
            stored = tuple(
                (str(m.get("name")), int(m.get("capacity", 0)))
                for m in (status or {}).get("members") or []
            )
            if status is not None and stored == live:
                self._queued.pop(key, None)
                continue
            if self._queued.get(key) == live:
                continue
            self._queued[key] = live
            out.append(key)
        for key in set(self._queued) - seen:
            del self._queued[key]
        return out
