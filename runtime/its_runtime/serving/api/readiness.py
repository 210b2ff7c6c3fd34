"""Readiness: warmed up, not draining, and every required dependency healthy.

Liveness (``/live``) says the process works; readiness (``/ready``) says "send me
traffic". They differ on purpose: a pod that is warming up or draining is alive but
must not receive frames, and restarting it would only make things worse.

Other components (the data plane's Redis cache, PostgreSQL writer, camera readers)
register a health check here instead of the API knowing about them. A *required*
dependency that is unhealthy makes the pod unready; an optional one (say, a database
behind an on-disk journal) only shows in the details. A component can also add a
section of plain state to the details (``describe``; the cameras' decode paths are
one): shown, never part of the verdict.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from its_runtime import health, redaction

log = logging.getLogger(__name__)

#: Longest a dependency check may take before it counts as unhealthy.
CHECK_TIMEOUT_S = 2.0


#: A health check: sync or async, returning a bool or a ``health.DependencyHealth``.
HealthCheck = Callable[
    [], "bool | health.DependencyHealth | Awaitable[bool | health.DependencyHealth]"
]


@dataclasses.dataclass
class _Dependency:
    check: HealthCheck
    required: bool


class Readiness:
    """The pieces of the readiness verdict, and the verdict with its reasons."""

    def __init__(self) -> None:
        self.warmed_up = False
        self.warmup_error: str | None = None
        self.draining = False
        self._deps: dict[str, _Dependency] = {}
        self._sections: dict[str, Callable[[], Any]] = {}

    def register(self, name: str, check: HealthCheck, *, required: bool = True) -> None:
        """Add a dependency health check (names are unique; registering again replaces)."""
        self._deps[name] = _Dependency(check, required)

    def describe(self, name: str, section: Callable[[], Any]) -> None:
        """Add ``name: section()`` (JSON-able) to the details; it never affects readiness."""
        self._sections[name] = section

    def _sections_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, section in self._sections.items():
            try:
                out[name] = section()
            except Exception as exc:
                out[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        return out

    async def _run_check(self, dep: _Dependency) -> health.DependencyHealth:
        try:
            result: Any = dep.check()
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(result, CHECK_TIMEOUT_S)
        except TimeoutError:
            return health.DependencyHealth(False, f"health check took over {CHECK_TIMEOUT_S}s")
        except Exception as exc:
            return health.DependencyHealth(False, f"health check failed: {exc!r}")
        if isinstance(result, health.DependencyHealth):
            return result
        return health.DependencyHealth(bool(result))

    async def evaluate(self) -> tuple[bool, dict[str, Any]]:
        """(ready, details) where details name every reason for not being ready."""
        names = list(self._deps)
        results = await asyncio.gather(*(self._run_check(self._deps[n]) for n in names))
        reasons: list[str] = []
        if self.warmup_error is not None:
            reasons.append(f"warm-up failed: {self.warmup_error}")
        elif not self.warmed_up:
            reasons.append("warming up")
        if self.draining:
            reasons.append("draining")
        deps: dict[str, Any] = {}
        for name, result in zip(names, results, strict=True):
            required = self._deps[name].required
            detail = redaction.redact_optional(result.detail)  # errors may quote a URL
            deps[name] = {"healthy": result.healthy, "required": required, "detail": detail}
            if required and not result.healthy:
                reasons.append(f"dependency {name} unhealthy: {detail or 'check failed'}")
        details = {
            "warmed_up": self.warmed_up,
            "draining": self.draining,
            "reasons": reasons,
            "dependencies": deps,
            **self._sections_json(),
        }
        return not reasons, details
