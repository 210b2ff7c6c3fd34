"""A camera URL held in a Secret (``cameras[].urlSecretRef``) stays in the Secret.

Before, a camera's URL (credentials and all) was a plain string in the CR and in the
rendered ConfigMap. Now the ConfigMap names only an environment variable, the pod gets
the URL through ``valueFrom.secretKeyRef``, a missing Secret is reported like the DSN's,
and an inline URL with a password is refused with a message naming the field.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from its_operator.api import resource
from its_operator.builders import configmap, deployment, findings, secretrefs
from its_operator.handlers import secrets
from its_runtime import camera_url
from its_runtime import config as rc

Make = Callable[..., resource.Pipeline]
PASSWORD = "S3cretPW"
SECRET_CAMERAS = [
    {"name": "gate-2", "urlSecretRef": {"name": "gate-cams", "key": "gate-2-url"}, "fps": 10},
    {"name": "cam-1", "url": "rtsp://viewer@cams.local/1", "fps": 15},
]


def test_the_configmap_names_an_env_variable_not_the_url(make_pipeline: Make) -> None:
    p = make_pipeline(cameras=SECRET_CAMERAS)
    text = configmap.build(p)["data"][rc.CONFIGMAP_KEY]
    parsed = rc.RuntimeConfig.from_yaml(text)
    gate = next(c for c in parsed.cameras if c.name == "gate-2")
    assert gate.url is None
    assert gate.url_secret_ref is None
    assert gate.url_env == "ITS_CAMERA_URL_GATE_2"
    assert "gate-cams" not in text
    assert "gate-2-url" not in text
    # An inline camera is rendered as it was.
    assert next(c for c in parsed.cameras if c.name == "cam-1").url == "rtsp://viewer@cams.local/1"


def test_the_deployment_fills_the_variable_from_the_secret(make_pipeline: Make) -> None:
    p = make_pipeline(cameras=SECRET_CAMERAS)
    d = deployment.build(p, config_hash="h")
    (container,) = d["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["ITS_CAMERA_URL_GATE_2"] == {
        "name": "ITS_CAMERA_URL_GATE_2",
        "valueFrom": {"secretKeyRef": {"name": "gate-cams", "key": "gate-2-url"}},
    }
    assert not any(e.get("value", "").startswith("rtsp") for e in container["env"])
    assert secretrefs.needed(p.spec)["gate-cams"] == frozenset({"gate-2-url"})


class _Secrets:
    """A stand-in API with one Secret lacking the camera's key."""

    def __init__(self, bodies: dict[str, dict[str, Any]]) -> None:
        self.bodies = bodies

    async def get(self, api: str, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        return self.bodies.get(name)


@pytest.mark.parametrize(
    ("bodies", "reason"),
    [
        ({}, "SecretNotFound"),
        (
            {
                "gate-cams": {
                    "metadata": {"uid": "u", "resourceVersion": "1"},
                    "data": {"other": "cnRzcDovL3U6UzNjcmV0UFdAaC94"},
                }
            },
            "SecretKeyNotFound",
        ),
    ],
)
def test_a_missing_camera_secret_is_a_problem_naming_it(
    make_pipeline: Make, bodies: dict[str, dict[str, Any]], reason: str
) -> None:
    p = make_pipeline(cameras=SECRET_CAMERAS)
    found = asyncio.run(secrets.resolve(_Secrets(bodies), p))  # type: ignore[arg-type]
    (problem,) = found.problems
    assert problem.reason == reason
    assert "gate-cams" in problem.message
    assert problem.stalling


def test_an_inline_url_with_a_password_is_refused_naming_the_field(spec_of: Any) -> None:
    body = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
        "spec": spec_of(cameras=[{"name": "c", "url": f"rtsp://admin:{PASSWORD}@10.0.0.9/s"}]),
    }
    with pytest.raises(resource.InvalidSpecError) as err:
        resource.parse(body)
    assert "spec.cameras.0.url" in str(err.value)
    assert "urlSecretRef" in str(err.value)
    assert PASSWORD not in str(err.value)


@pytest.mark.parametrize(
    "camera",
    [
        {"name": "c"},
        {"name": "c", "url": "rtsp://h/x", "urlSecretRef": {"name": "s", "key": "k"}},
    ],
)
def test_a_camera_needs_exactly_one_url_source(spec_of: Any, camera: dict[str, Any]) -> None:
    body = {"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": spec_of()}
    body["spec"]["cameras"] = [camera]
    with pytest.raises(resource.InvalidSpecError, match="exactly one of cameras"):
        resource.parse(body)


def test_the_crd_offers_urlsecretref_with_cel_rules_and_no_urlenv() -> None:
    schema = rc.CameraConfig.model_json_schema(by_alias=True)
    assert "urlSecretRef" in schema["properties"]
    assert "urlEnv" not in schema["properties"]
    rules = [r["rule"] for r in schema["x-kubernetes-validations"]]
    assert camera_url.ONE_SOURCE_CEL in rules
    assert camera_url.NO_PASSWORD_CEL in rules


def test_problems_and_events_never_carry_url_credentials() -> None:
    problem = findings.Problem(
        "ChildApplyFailed", f"could not open rtsp://admin:{PASSWORD}@10.0.0.9/s: refused"
    )
    assert PASSWORD not in problem.message
    assert "rtsp://***@10.0.0.9/s" in problem.message
