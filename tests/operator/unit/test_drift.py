"""Drift detection: a live object contains what was applied, despite server defaults."""

from __future__ import annotations

from its_operator.handlers import drift


def test_server_defaults_and_canonical_quantities_are_not_drift() -> None:
    desired = {
        "spec": {
            "ports": [{"name": "http", "port": 8080}],
            "resources": {"limits": {"memory": "1024Mi", "cpu": "0.5"}},
            "securityContext": {},
            "env": [],
        }
    }
    live = {
        "spec": {
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "resources": {"limits": {"memory": "1Gi", "cpu": "500m"}},
            "clusterIP": "10.0.0.1",
        }
    }
    assert drift.difference(live, desired) is None


def test_edited_or_removed_fields_are_drift() -> None:
    desired = {"spec": {"image": "a:1", "env": [{"name": "A", "value": "1"}], "readOnly": False}}
    assert (
        drift.difference(
            {"spec": {"image": "b:2", "env": [{"name": "A", "value": "1"}], "readOnly": False}},
            desired,
        )
        == ".spec.image"
    )
    assert (
        drift.difference({"spec": {"image": "a:1", "env": [], "readOnly": False}}, desired)
        == ".spec.env"
    )
    assert (
        drift.difference({"spec": {"image": "a:1", "env": [{"name": "A", "value": "1"}]}}, desired)
        == ".spec.readOnly"
    )
    assert (
        drift.difference(
            {"spec": {"image": "a:1", "env": [{"name": "A", "value": "1"}], "readOnly": 0}}, desired
        )
        == ".spec.readOnly"
    )


def test_quantity_comparison_is_exact() -> None:
    assert drift.difference({"q": "1Gi"}, {"q": "1G"}) == ".q"
    assert drift.difference({"q": "12.5"}, {"q": "12500m"}) is None
