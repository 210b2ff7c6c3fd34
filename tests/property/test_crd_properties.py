"""Hostile AnalyticsPipeline specs, generated from the CRD's schema and mutated.

Properties, over every generated spec (``crd_strategies``: valid by the structural
schema, then one field broken), asked of the real API server by a server-side
dry-run create: a spec the API server admits is one the operator serves (the
admitted, defaulted object parses with ``resource.parse``, every child renders with
``children.desired``, and the runtime parses the ConfigMap it would read); a spec it
rejects is rejected with a message naming a field of the spec. So nothing reaches
the operator that it can only answer with ``InvalidSpec`` or a crash.

Each test prints how many cases it ran and how many were admitted or rejected
(pytest's terminal summary, "generated cases").
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from its_operator.api import crdgen, resource
from its_operator.builders import children
from its_runtime import config as rc
from tests.property import crd_strategies as cs
from tests.property.rawhttp import record_cases

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SETTINGS = settings(
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
        HealthCheck.filter_too_much,
    ],
)
#: A rejection names the field: ``spec.model.path: Invalid value``, ``.spec.x: field
#: not declared in schema``, ``spec.model: Required value``.
FIELD_NAMED = re.compile(r"\bspec(\.[A-Za-z]|\[|:)")
SCHEMA = cs.spec_schema()
SPECS = cs.from_schema(SCHEMA)


@pytest.fixture(scope="module")
def crds(cluster: Any) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(crdgen.CRD_DIR))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=30s", "crd/analyticspipelines.its.ai"
    )


def dry_run_create(api: Any, namespace: str, spec: dict[str, Any]) -> tuple[Any, str]:
    """(the admitted object, "") or (None, the API server's message)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    body = {
        "apiVersion": resource.API_VERSION,
        "kind": resource.KIND,
        "metadata": {"name": "prop"},
        "spec": spec,
    }
    objects = client.CustomObjectsApi(api)
    try:
        admitted = objects.create_namespaced_custom_object(
            resource.GROUP, resource.VERSION, namespace, resource.PLURAL, body, dry_run="All"
        )
    except ApiException as exc:
        status, text = exc.status, str(exc.body)
    else:
        return admitted, ""
    assert status in (400, 422), (status, text[:2000])  # never a 500
    try:
        return None, str(json.loads(text)["message"])
    except (ValueError, KeyError, TypeError):
        return None, text


def served(admitted: dict[str, Any]) -> None:
    """What the operator does with an admitted object, short of the API calls."""
    p = resource.parse(admitted)
    manifests = children.desired(p, children.Observed(service_monitor_crd=True))
    configmap = next(m for m in manifests if m["kind"] == "ConfigMap")
    rc.RuntimeConfig.from_yaml(configmap["data"][rc.CONFIGMAP_KEY])


def check(test: str, api: Any, namespace: str, spec: dict[str, Any]) -> None:
    admitted, message = dry_run_create(api, namespace, spec)
    if admitted is None:
        record_cases(test, "rejected")
        assert FIELD_NAMED.search(message), message[:2000]
        return
    record_cases(test, "admitted")
    try:
        served(admitted)
    except Exception as exc:
        raise AssertionError(
            f"admitted but not served: {type(exc).__name__}: {exc}\nspec: {json.dumps(spec)[:3000]}"
        ) from exc


def test_every_schema_valid_spec_the_api_server_admits_is_served(
    crds: None, k8s_api: Any, namespace: str
) -> None:
    name = "crd: specs from the schema"

    @settings(SETTINGS, max_examples=300)
    @given(spec=SPECS)
    def prop(spec: dict[str, Any]) -> None:
        check(name, k8s_api, namespace, spec)

    prop()


def test_a_spec_with_one_field_broken_is_rejected_naming_it_or_served(
    crds: None, k8s_api: Any, namespace: str
) -> None:
    name = "crd: one field broken"

    @settings(SETTINGS, max_examples=400)
    @given(data=st.data())
    def prop(data: st.DataObject) -> None:
        spec = data.draw(SPECS)
        broken = data.draw(cs.mutated(spec, SCHEMA))
        check(name, k8s_api, namespace, broken)

    prop()


#: Specs the properties above found admitted but not served (each crashed the
#: operator before the fix: a fractional exponent CEL's quantity() and ours refuse,
#: a Decimal overflow, a float overflow; one stalled the API server's CEL into a
#: 504), and their neighbours the Deployment or the claim would refuse. Each is now
#: rejected at admission, naming its field.
FOUND: dict[str, tuple[dict[str, Any], str]] = {
    "fractional exponent": ({"engineCache": {"size": ".0E.0"}}, "spec.engineCache.size"),
    "exponent past Decimal": ({"engineCache": {"size": ".1E1000000"}}, "spec.engineCache.size"),
    "past a float": ({"engineCache": {"size": "1E310"}}, "spec.engineCache.size"),
    "exponent that stalls CEL": (
        {"runtime": {"resources": {"cpuLimit": "-73.3895605e-491155102"}}},
        "spec.runtime.resources.cpuLimit",
    ),
    "past the bound": ({"engineCache": {"size": "2Pi"}}, "spec.engineCache.size"),
    "zero engine cache": ({"engineCache": {"size": "0"}}, "spec.engineCache.size"),
    "negative journal": ({"journal": {"size": "-4Gi"}}, "spec.journal.size"),
    "negative cpu": ({"runtime": {"resources": {"cpu": "-1"}}}, "spec.runtime.resources.cpu"),
    "limit below request": (
        {"runtime": {"resources": {"memory": "8Gi", "memoryLimit": "1Gi"}}},
        "spec.runtime.resources.memoryLimit",
    ),
}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


MINIMAL = {"model": {"path": "/models/m.onnx"}, "runtime": {"image": "its-runtime:dev"}}


@pytest.mark.parametrize("case", sorted(FOUND))
def test_found_specs_are_rejected_naming_the_field(
    crds: None, k8s_api: Any, namespace: str, case: str
) -> None:
    extra, field = FOUND[case]
    admitted, message = dry_run_create(k8s_api, namespace, _merge(MINIMAL, extra))
    assert admitted is None, f"admitted: {json.dumps(admitted.get('spec'))}"
    assert field in message, message
    # The operator's own model refuses it too, with the same field in the message.
    with pytest.raises(ValueError, match=field.removeprefix("spec.").replace(".", r"\.")):
        resource.parse(
            {
                "apiVersion": resource.API_VERSION,
                "kind": resource.KIND,
                "metadata": {"name": "found", "namespace": namespace, "uid": "u"},
                "spec": _merge(MINIMAL, extra),
            }
        )


def test_the_largest_sizes_admitted_are_served(crds: None, k8s_api: Any, namespace: str) -> None:
    spec = _merge(
        MINIMAL,
        {"engineCache": {"size": "1Pi"}, "journal": {"enabled": True, "size": "1125899906842624"}},
    )
    admitted, message = dry_run_create(k8s_api, namespace, spec)
    assert admitted is not None, message
    served(admitted)
