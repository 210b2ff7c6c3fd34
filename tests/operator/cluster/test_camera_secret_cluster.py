"""``cameras[].urlSecretRef`` on the real API server, with the operator as a process.

The CRD's CEL rules refuse an inline URL with a password and a camera with both or
neither source, naming the field; a pipeline whose camera Secret is missing reports
it (by name) in status and Events, heals when the Secret appears, and no status,
Event, ConfigMap or operator log ever holds the URL's password.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SpecOf = Callable[..., dict[str, Any]]
Doc = Callable[[str, dict[str, Any]], dict[str, Any]]
PASSWORD = "S3cretPW"
REF = {"name": "gate-cams", "key": "gate-2-url"}


@pytest.mark.parametrize(
    ("camera", "needles"),
    [
        (
            {"name": "c", "url": f"rtsp://admin:{PASSWORD}@10.0.0.9/s"},
            ["spec.cameras[0].url", "must not carry a password", "urlSecretRef"],
        ),
        ({"name": "c"}, ["spec.cameras[0].url", "set exactly one of cameras[].url"]),
        (
            {"name": "c", "url": "rtsp://10.0.0.9/s", "urlSecretRef": REF},
            ["spec.cameras[0].url", "set exactly one of cameras[].url"],
        ),
    ],
    ids=["inline-password", "no-source", "both-sources"],
)
def test_camera_url_sources_are_checked_at_apply_time(
    cluster: Any,
    crds: None,
    namespace: str,
    spec_of: SpecOf,
    pipeline: Doc,
    camera: dict[str, Any],
    needles: list[str],
) -> None:
    doc = pipeline("bad-camera", spec_of(cameras=[camera]))
    proc = cluster.kubectl(
        "apply",
        "--server-side",
        "--validate=strict",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump(doc),
        check=False,
    )
    assert proc.returncode != 0, "accepted"
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    assert PASSWORD not in proc.stderr


def test_a_missing_camera_secret_is_reported_by_name_and_no_value_leaks(
    cluster: Any, kube: Any, operator: Any, spec_of: SpecOf, pipeline: Doc, wait_until: Any
) -> None:
    op = operator()
    cameras = [{"name": "gate-2", "urlSecretRef": REF, "fps": 10}]
    kube.apply(pipeline("gated", spec_of(cameras=cameras)))
    ready = wait_until(
        lambda: (
            kube.condition("gated", "Ready").get("reason") == "SecretNotFound"
            and kube.condition("gated", "Ready")
        ),
        15,
        what="SecretNotFound",
    )
    assert "gate-cams" in ready["message"]
    container = kube.get("deployment", "gated")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["ITS_CAMERA_URL_GATE_2"]["valueFrom"]["secretKeyRef"] == REF

    url = f"rtsp://admin:{PASSWORD}@10.0.0.9:554/gate-2"
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        "gate-cams",
        "-n",
        kube.ns,
        f"--from-literal=gate-2-url={url}",
    )
    wait_until(lambda: kube.ready("gated"), 20, what="Ready after the Secret appears")
    configmap = kube.get("configmap", "gated-config")
    channels = {
        "status": json.dumps(kube.get("analyticspipeline", "gated")["status"]),
        "events": json.dumps(kube.items("events")),
        "configmap": json.dumps(configmap["data"]),
        "operator log": op.log.read_text(encoding="utf-8", errors="replace"),
    }
    assert "ITS_CAMERA_URL_GATE_2" in channels["configmap"]
    assert [name for name, text in channels.items() if PASSWORD in text or "10.0.0.9" in text] == []
    reasons = {e["reason"] for e in kube.items("events") if e["involvedObject"]["name"] == "gated"}
    assert "SecretNotFound" in reasons
