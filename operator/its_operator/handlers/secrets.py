"""Resolving the Secrets a pipeline references: are they there, and which version.

Secrets are not watched (the operator would need to list every Secret of every
served namespace, and hold them): a reconcile GETs exactly the ones
``builders.secretrefs`` names, in parallel. Two things come out of that: problems
(a missing Secret or key, reported in status before any pod would fail on it), and a
version string folded into the pod template so that a rotated Secret rolls the pods.
While something is missing, the reconciler comes back every ``SECRET_RECHECK_S``,
since no event would tell it the Secret appeared.
"""

from __future__ import annotations

import asyncio
import dataclasses

from its_operator.api import resource
from its_operator.builders import meta, secretrefs
from its_operator.builders import status as status_builder
from its_operator.handlers import kube

#: How often a pipeline waiting for a Secret checks again (Secrets are not watched).
SECRET_RECHECK_S = 3.0


@dataclasses.dataclass(frozen=True)
class Resolution:
    """Problems with the referenced Secrets, and a version string of those found."""

    problems: list[status_builder.Problem]
    version: str


async def resolve(client: kube.Kube, p: resource.Pipeline) -> Resolution:
    needed = secretrefs.needed(p.spec)
    if not needed:
        return Resolution([], "")
    bodies = await asyncio.gather(*(client.get("v1", "Secret", p.namespace, n) for n in needed))
    problems: list[status_builder.Problem] = []
    versions: list[str] = []
    for (name, keys), body in zip(needed.items(), bodies, strict=True):
        if body is None:
            problems.append(
                status_builder.Problem("SecretNotFound", f"Secret {p.namespace}/{name} not found")
            )
            versions.append(f"{name}:missing")
            continue
        present = set((body.get("data") or {}).keys()) | set((body.get("stringData") or {}).keys())
        missing = sorted(keys - present)
        if missing:
            problems.append(
                status_builder.Problem(
                    "SecretKeyNotFound",
                    f"Secret {p.namespace}/{name} has no key {', '.join(missing)}",
                )
            )
        bmeta = body["metadata"]
        versions.append(f"{name}:{bmeta.get('uid')}:{bmeta.get('resourceVersion')}")
    return Resolution(problems, meta.canonical_hash(versions))
