"""A dependency's health as readiness reports it: healthy or not, and why.

On the shared floor so that the data plane (Redis, PostgreSQL, cameras) can describe
its own health without importing serving's readiness registry, which collects it.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DependencyHealth:
    healthy: bool
    detail: str = ""
