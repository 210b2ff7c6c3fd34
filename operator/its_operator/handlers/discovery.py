"""Which optional APIs the cluster serves: asked rarely, trusted for a while.

A ServiceMonitor can only be applied where the Prometheus Operator's CRD is
installed, and that is a fact about the cluster, not about a pipeline: it is asked
once per ``DISCOVERY_TTL_S`` for all pipelines rather than once per reconcile, and
it is not watched (CRDs come and go rarely). The answer may go stale in between;
:mod:`applying` reports an optional kind the API server no longer serves, and the
reconciler calls :meth:`Discovery.invalidate` so that the next reconcile asks again.

Kept apart from the reconcile so that "does the cluster have X" has one owner and
one cache, whatever number of pipelines ask.
"""

from __future__ import annotations

import time

from its_operator.api import status as st
from its_operator.builders import servicemonitor
from its_operator.handlers import kube

#: How long a "ServiceMonitor CRD exists" answer is trusted.
DISCOVERY_TTL_S = 30.0
#: Kinds whose API may be absent: a 404 when applying one means "not served", not a
#: failure of the pipeline.
OPTIONAL_KINDS = frozenset({"ServiceMonitor"})


class Discovery:
    """The cached answer to "is the ServiceMonitor CRD installed?"."""

    def __init__(self, client: kube.Kube) -> None:
        self.kube = client
        self._checked = -1e9
        self._available = False

    async def service_monitor_crd(self) -> bool:
        if time.monotonic() - self._checked > DISCOVERY_TTL_S:
            self._available = await self.kube.has_resource(
                servicemonitor.GROUP, servicemonitor.VERSION, servicemonitor.PLURAL
            )
            self._checked = time.monotonic()
        return self._available

    async def service_monitor(self, wanted: bool) -> st.ServiceMonitorState:
        """What ``status.monitoring.serviceMonitor`` says for a spec that wants one or not."""
        if not wanted:
            return st.ServiceMonitorState.DISABLED
        if await self.service_monitor_crd():
            return st.ServiceMonitorState.APPLIED
        return st.ServiceMonitorState.CRD_NOT_INSTALLED

    def invalidate(self) -> None:
        """Forget the answer (an optional kind was refused as not served): ask again."""
        self._checked = -1e9
