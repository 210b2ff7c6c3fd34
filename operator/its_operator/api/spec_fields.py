"""Field grammars and reference types that every part of the spec shares.

Kubernetes' own string grammars (quantities, DNS subdomain names, durations,
percentages), the annotated types built on them, and the Secret key reference that
``runtime.env``, ``cache`` and ``database`` all use. They live apart from the topic
modules (``spec_runtime``, ``spec_storage``, ...) so that those import this one and
never each other: one pattern, one bound, one description, wherever it is used.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any

from pydantic import BaseModel, Field

from its_operator.api import base

#: Kubernetes' own quantity grammar (as controller-gen emits it for resource.Quantity).
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DURATION_PATTERN = r"^[0-9]+(ms|s|m|h)$"
PERCENT_PATTERN = r"^[0-9]+%$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"

Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=64)]
ResourceName = Annotated[str, Field(pattern=DNS_SUBDOMAIN_PATTERN, min_length=1, max_length=253)]
IntOrPercent = Annotated[
    int | Annotated[str, Field(pattern=PERCENT_PATTERN, max_length=8)],
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]
#: A Kubernetes object passed through as is (affinity, raw HPA metrics): the API
#: server validates it when the operator applies the child, and the operator reports
#: a rejection in status.
FreeForm = Annotated[
    dict[str, Any], Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
]


def runtime_field(model: type[BaseModel], name: str, *, description: str | None = None) -> Any:
    """Reuse a runtime config field (type bounds, default, description) in a CR model.

    The CR field may have another name (its camelCase key comes from the CR model's
    own alias generator) and a description written for the CR's reader."""
    field = copy.copy(model.model_fields[name])
    if description is not None:
        field.description = description
    return field


class SecretKeyRef(base.CrModel):
    """A key of a Secret in the pipeline's namespace; the pod gets it via ``valueFrom``."""

    name: ResourceName = Field(..., description="Name of the Secret (same namespace).")
    key: str = Field(
        ...,
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key inside the Secret's data.",
    )
