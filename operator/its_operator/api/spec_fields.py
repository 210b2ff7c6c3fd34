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

from its_operator.api import base, quantities

#: The quantity grammar ``resource.ParseQuantity`` accepts, with the exponent bounded
#: to two digits. controller-gen's pattern for resource.Quantity also admits a
#: fractional exponent ("1E.5"), which ParseQuantity (and so CEL's ``quantity()``)
#: refuses, and any exponent: "-7.3e-491155102" made the API server's CEL quantity
#: comparison run past its request timeout (a 504 for one create). Both were found
#: by the CRD property test; no resource size needs 1e100.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]{1,2}))?$"
)
#: The largest volume size a pipeline may ask for.
MAX_VOLUME_SIZE = "1Pi"
_MAX_VOLUME_BYTES = quantities.parse(MAX_VOLUME_SIZE)
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DURATION_PATTERN = r"^[0-9]+(ms|s|m|h)$"
PERCENT_PATTERN = r"^[0-9]+%$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"

Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=64)]


def cel_unless_malformed(rule: str, *values: str) -> str:
    """``rule`` (which calls CEL's ``quantity()`` on ``values``), evaluated only when
    every value matches ``QUANTITY_PATTERN``. The API server runs CEL rules even on a
    field whose pattern failed, and ``quantity("-7.3e-491155102")`` ran past its
    request timeout (a 504): the pattern, checked in linear time by RE2, guards it,
    and its own error is the one the user sees."""
    guards = "".join(f"!{v}.matches(r'{QUANTITY_PATTERN}') || " for v in values)
    return f"{guards}({rule})"


def volume_size_rules(field: str) -> list[Any]:
    """CEL rules of a PVC size field: more than 0, at most ``MAX_VOLUME_SIZE``, and
    only growing (a PersistentVolumeClaim cannot shrink). Without the bound the API
    server admits "1E99", which no claim can be."""
    return [
        base.cel(
            cel_unless_malformed(
                f"quantity(self).isGreaterThan(quantity('0')) && "
                f"quantity(self).compareTo(quantity('{MAX_VOLUME_SIZE}')) <= 0",
                "self",
            ),
            f"{field} must be more than 0 and at most {MAX_VOLUME_SIZE}",
        ),
        base.cel(
            cel_unless_malformed("quantity(self).compareTo(quantity(oldSelf)) >= 0", "self"),
            f"{field} may only grow (a PersistentVolumeClaim cannot shrink)",
        ),
    ]


def check_volume_size(value: str, field: str) -> str:
    """``volume_size_rules``' bound in Python (the growth rule needs the old object)."""
    if not 0 < quantities.parse(value) <= _MAX_VOLUME_BYTES:
        raise ValueError(f"{field} must be more than 0 and at most {MAX_VOLUME_SIZE}")
    return value


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
