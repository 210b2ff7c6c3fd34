"""The shared journal claim: a deleted pod's spooled rows survive it (issue 10)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from its_operator.api import resource
from its_operator.builders import children, deployment
from its_runtime import config as rc

Make = Callable[..., resource.Pipeline]


def test_an_enabled_journal_is_one_claim_all_replicas_mount(make_pipeline: Make) -> None:
    p = make_pipeline(
        runtime={"image": "i", "replicas": 3},
        engineCache={"accessMode": "ReadWriteMany"},
        journal={"enabled": True, "size": "8Gi"},
    )
    claims = [m for m in children.desired(p, children.Observed()) if m["kind"].endswith("Claim")]
    journal = next(c for c in claims if c["metadata"]["name"] == "demo-journal")
    assert journal["spec"]["accessModes"] == ["ReadWriteMany"]
    assert journal["spec"]["resources"]["requests"]["storage"] == "8Gi"
    assert journal["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    pod = deployment.build(p, config_hash="x")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["journal"] == {
        "name": "journal",
        "persistentVolumeClaim": {"claimName": "demo-journal"},
    }
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["journal"] == rc.DatabaseConfig().journal_dir  # the runtime's root
    off = deployment.build(make_pipeline(), config_hash="x")["spec"]["template"]["spec"]
    assert {"name": "journal", "emptyDir": {}} in off["volumes"]


def test_a_read_write_once_journal_serves_one_replica(make_pipeline: Make) -> None:
    with pytest.raises(resource.InvalidSpecError, match=r"journal\.accessMode ReadWriteOnce"):
        make_pipeline(
            runtime={"image": "i", "replicas": 2},
            engineCache={"accessMode": "ReadWriteMany"},
            journal={"enabled": True, "accessMode": "ReadWriteOnce"},
        )
    make_pipeline(journal={"enabled": True, "accessMode": "ReadWriteOnce"})  # one replica
