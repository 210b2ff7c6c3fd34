"""Drift detection: a live object still holds what the operator applied and owns.

Server defaults and canonical quantities are not drift; neither is anything another
field manager, webhook or admission policy added. A field the operator owns that was
changed or removed is.
"""

from __future__ import annotations

from typing import Any

from its_operator.handlers import cache, drift, kube


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


# --- Judged on the operator's own managedFields entry --------------------------------
#
# The samples copy the shape the API server writes: an associative list entry is
# ``k:{<key fields as JSON>}`` with a ``.`` for the entry itself, an atomic subtree
# (a label selector, ``args``) is a leaf ``{}``.

OPERATOR = "its-operator"
RUNTIME = 'k:{"name":"runtime"}'


def _desired() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "cam", "namespace": "ns", "labels": {"app": "its"}},
        "spec": {
            "selector": {"matchLabels": {"app": "its"}},
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "runtime",
                            "image": "its:1",
                            "args": ["--serve"],
                            "env": [
                                {"name": "HOME", "value": "/tmp"},
                                {"name": "LOG", "value": "info"},
                            ],
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "resources": {"limits": {"memory": "1024Mi"}},
                        }
                    ]
                }
            },
        },
    }


def _own_fields() -> dict[str, Any]:
    return {
        "f:metadata": {"f:labels": {"f:app": {}}},
        "f:spec": {
            "f:selector": {},
            "f:template": {
                "f:spec": {
                    "f:containers": {
                        RUNTIME: {
                            ".": {},
                            "f:name": {},
                            "f:image": {},
                            "f:args": {},
                            "f:env": {
                                'k:{"name":"HOME"}': {".": {}, "f:name": {}, "f:value": {}},
                                'k:{"name":"LOG"}': {".": {}, "f:name": {}, "f:value": {}},
                            },
                            "f:ports": {
                                'k:{"containerPort":8080,"protocol":"TCP"}': {
                                    ".": {},
                                    "f:name": {},
                                    "f:containerPort": {},
                                }
                            },
                            "f:resources": {"f:limits": {"f:memory": {}}},
                        }
                    }
                }
            },
        },
    }


def _policy_fields() -> dict[str, Any]:
    """What a policy engine applied as its own manager: an env var and a sidecar."""
    return {
        "f:spec": {
            "f:template": {
                "f:spec": {
                    "f:containers": {
                        RUNTIME: {"f:env": {'k:{"name":"TRACE"}': {".": {}, "f:name": {}}}},
                        'k:{"name":"proxy"}': {".": {}, "f:name": {}, "f:image": {}},
                    }
                }
            }
        }
    }


def _live(own: dict[str, Any] | None = None) -> dict[str, Any]:
    """The live Deployment: server defaults, canonical quantities, foreign additions."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "cam",
            "namespace": "ns",
            "labels": {"app": "its"},
            "managedFields": [
                {
                    "manager": OPERATOR,
                    "operation": "Apply",
                    "apiVersion": "apps/v1",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": own if own is not None else _own_fields(),
                },
                {
                    "manager": "policy-engine",
                    "operation": "Apply",
                    "apiVersion": "apps/v1",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": _policy_fields(),
                },
                {
                    "manager": "kube-controller-manager",
                    "operation": "Update",
                    "subresource": "status",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:status": {"f:replicas": {}}},
                },
            ],
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "its"}},
            "template": {
                "spec": {
                    "containers": [
                        {"name": "proxy", "image": "mesh/proxy:2"},
                        {
                            "name": "runtime",
                            "image": "its:1",
                            "args": ["--serve"],
                            "env": [
                                {"name": "TRACE", "value": "1"},
                                {"name": "HOME", "value": "/tmp"},
                                {"name": "LOG", "value": "info"},
                            ],
                            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                            "resources": {"limits": {"memory": "1Gi"}},
                            "terminationMessagePath": "/dev/termination-log",
                        },
                    ]
                }
            },
        },
        "status": {"replicas": 1},
    }


def _runtime(live: dict[str, Any]) -> dict[str, Any]:
    containers = live["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = next(c for c in containers if c["name"] == "runtime")
    return found


def _own_runtime(fields: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = fields["f:spec"]["f:template"]["f:spec"]["f:containers"][RUNTIME]
    return found


def test_env_vars_and_sidecars_added_by_another_manager_are_not_drift() -> None:
    live = _live()
    assert drift.difference(live, _desired(), OPERATOR) is None
    # The old reading (every list entry counts) called this drift, and re-applied forever.
    assert drift.difference(live, _desired()) == ".spec.template.spec.containers"


def test_a_foreign_entry_inserted_first_shifts_nothing_in_a_keyed_list() -> None:
    live = _live()
    _runtime(live)["ports"].insert(0, {"name": "metrics", "containerPort": 15090})
    assert drift.difference(live, _desired(), OPERATOR) is None


def test_an_owned_env_var_removed_by_someone_else_is_drift() -> None:
    live, own = _live(), _own_fields()
    _runtime(live)["env"] = [{"name": "TRACE", "value": "1"}, {"name": "LOG", "value": "info"}]
    del _own_runtime(own)["f:env"]['k:{"name":"HOME"}']  # the server drops what is gone
    live["metadata"]["managedFields"][0]["fieldsV1"] = own
    assert (
        drift.difference(live, _desired(), OPERATOR) == ".spec.template.spec.containers[0].env[0]"
    )


def test_an_owned_field_taken_over_by_another_writer_is_drift() -> None:
    # `kubectl set image` moves the field to its own manager.
    live, own = _live(), _own_fields()
    _runtime(live)["image"] = "evil:latest"
    del _own_runtime(own)["f:image"]
    live["metadata"]["managedFields"][0]["fieldsV1"] = own
    assert drift.difference(live, _desired(), OPERATOR) == ".spec.template.spec.containers[0].image"


def test_an_owned_value_changed_in_place_is_drift() -> None:
    live = _live()
    _runtime(live)["resources"]["limits"]["memory"] = "2Gi"
    found = drift.difference(live, _desired(), OPERATOR)
    assert found == ".spec.template.spec.containers[0].resources.limits.memory"


def test_owned_labels_and_resources_removed_are_drift() -> None:
    live, own = _live(), _own_fields()
    del live["metadata"]["labels"]["app"]
    del own["f:metadata"]["f:labels"]["f:app"]
    live["metadata"]["managedFields"][0]["fieldsV1"] = own
    assert drift.difference(live, _desired(), OPERATOR) == ".metadata.labels.app"

    live, own = _live(), _own_fields()
    del _runtime(live)["resources"]
    del _own_runtime(own)["f:resources"]
    live["metadata"]["managedFields"][0]["fieldsV1"] = own
    assert (
        drift.difference(live, _desired(), OPERATOR)
        == ".spec.template.spec.containers[0].resources"
    )


def test_an_atomic_list_is_compared_whole() -> None:
    live = _live()
    _runtime(live)["args"] = ["--serve", "--debug"]
    found = drift.difference(live, _desired(), OPERATOR)
    assert found == ".spec.template.spec.containers[0].args"


def test_without_the_operators_entry_the_strict_reading_applies() -> None:
    live = _live()
    live["metadata"]["managedFields"] = live["metadata"]["managedFields"][1:]
    assert drift.difference(live, _desired(), OPERATOR) == ".spec.template.spec.containers"
    _runtime(live)["env"].pop(0)  # TRACE
    live["spec"]["template"]["spec"]["containers"].pop(0)
    del live["metadata"]["managedFields"]
    assert drift.difference(live, _desired(), OPERATOR) is None


def test_the_cache_keeps_only_the_operators_own_entry() -> None:
    slimmed = cache.slim(_live())
    (entry,) = slimmed["metadata"]["managedFields"]
    assert entry["manager"] == kube.FIELD_MANAGER == OPERATOR
    assert drift.difference(slimmed, _desired(), OPERATOR) is None
    assert "managedFields" not in cache.slim({"metadata": {"name": "x"}})["metadata"]
