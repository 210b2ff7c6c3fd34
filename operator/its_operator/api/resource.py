"""The AnalyticsPipeline resource: its names on the API server and its parsed form.

The names are kept in one place so the handlers, the CRD generator and the tests
share one spelling of the group, version and plural; ``parse`` turns a CR body into
the typed ``Pipeline`` the builders take, with errors that name the field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pydantic

from its_operator.api import spec as spec_module

GROUP = "its.ai"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "AnalyticsPipeline"
PLURAL = "analyticspipelines"
SINGULAR = "analyticspipeline"
SHORT_NAMES = ("ap",)
CATEGORIES = ("its",)
CRD_NAME = f"{PLURAL}.{GROUP}"
#: Children are named after the pipeline (``<name>-engine-cache`` is the longest), so
#: the pipeline's own name is a DNS label short enough to leave room for suffixes.
MAX_NAME_LENGTH = 48


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """One AnalyticsPipeline as the builders need it: identity plus the parsed spec."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: spec_module.AnalyticsPipelineSpec


class InvalidSpecError(ValueError):
    """The stored spec does not parse (the CRD was bypassed or is older than the models)."""


def parse(body: Mapping[str, Any]) -> Pipeline:
    """Parse a CR body; InvalidSpecError's message names the offending field."""
    meta = body.get("metadata", {})
    try:
        parsed = spec_module.AnalyticsPipelineSpec.model_validate(body.get("spec") or {})
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            ".".join(["spec", *(str(p) for p in err["loc"])]) + f": {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidSpecError(problems) from None
    return Pipeline(
        name=str(meta["name"]),
        namespace=str(meta["namespace"]),
        uid=str(meta["uid"]),
        generation=int(meta.get("generation", 1)),
        spec=parsed,
    )
