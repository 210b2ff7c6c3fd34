"""The committed CRD is exactly what the models generate, and it is structural."""

from __future__ import annotations

import pathlib
from typing import Any

import yaml

from its_operator.api import crdgen, resource, schema, spec, spec_fields, spec_rollout


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, sub in (node.get("properties") or {}).items():
            out += _walk(sub, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            out += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


def _committed(name: str) -> str:
    return (crdgen.CRD_DIR / name).read_text(encoding="utf-8")


def test_committed_crds_match_the_models() -> None:
    for name, text in crdgen.render().items():
        assert _committed(name) == text, (
            f"crds/{name} is stale: run `python -m its_operator.api.crdgen`"
        )


def test_check_mode_fails_on_a_stale_file(tmp_path: pathlib.Path, capsys: Any) -> None:
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 0
    target = tmp_path / crdgen.PIPELINE_FILE
    target.write_text(target.read_text().replace("Largest batch", "Biggest batch"))
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 1
    assert "Biggest batch" in capsys.readouterr().out


def test_schema_is_structural_everywhere() -> None:
    crd = yaml.safe_load(_committed(crdgen.PIPELINE_FILE))
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(root):
        assert not {"$ref", "title", "allOf"} & set(node), path
        assert node.get("additionalProperties") is not False, path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path
        for branch in node.get("anyOf", []):
            assert branch.get("type") != "null", path
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True, path


def test_free_form_fields_are_only_the_pass_through_objects() -> None:
    crd = yaml.safe_load(_committed(crdgen.PIPELINE_FILE))
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    free = sorted(p for p, n in _walk(root) if n.get("x-kubernetes-preserve-unknown-fields"))
    assert free == [
        ".spec.autoscaling.behavior",
        ".spec.autoscaling.metrics[]",
        ".spec.networkPolicy.ingressFrom[]",
        ".spec.runtime.affinity",
    ]


def test_every_spec_field_has_a_description() -> None:
    crd = yaml.safe_load(_committed(crdgen.PIPELINE_FILE))
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    missing = [
        p
        for p, n in _walk(spec_schema)
        if p and not p.endswith("[]") and not p.endswith("}") and not n.get("description")
    ]
    assert missing == []


def test_crd_names_status_subresource_and_printer_columns() -> None:
    crd = crdgen.pipeline_crd()
    assert crd["metadata"]["name"] == "analyticspipelines.its.ai"
    assert crd["spec"]["names"]["shortNames"] == ["ap"]
    version = crd["spec"]["versions"][0]
    assert version["name"] == resource.VERSION
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Ready", "Reason", "Replicas", "Cameras", "Cache", "Age"]


def test_cross_field_rules_are_cel_with_messages_naming_fields() -> None:
    s = schema.structural(spec.AnalyticsPipelineSpec)
    messages = [v["message"] for _, n in _walk(s) for v in n.get("x-kubernetes-validations", [])]
    for needle in (
        "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        "optBatchSize must not exceed maxBatchSize",
        "runtime.replicas must not be set while autoscaling.enabled is true",
        "url scheme must be one of",
        "rollout.maxSurge and rollout.maxUnavailable must not both be 0",
        "engineCache.size may only grow",
    ):
        assert any(needle in m for m in messages), needle


def test_defaults_reach_the_schema_including_factories() -> None:
    s = schema.structural(spec.AnalyticsPipelineSpec)
    props = s["properties"]
    assert props["rollout"]["properties"]["maxSurge"]["default"] == 0
    assert props["slo"]["properties"]["p99LatencyMs"]["default"] == 100.0
    assert props["rollout"]["default"]["strategy"] == "RollingUpdate"
    assert props["model"]["properties"]["inputShape"]["default"] == [3, 320, 320]
    assert "default" not in props["runtime"]["properties"]["replicas"]
    assert props["runtime"]["properties"]["replicas"]["nullable"] is True


def test_int_or_string_fields_keep_their_pattern() -> None:
    surge = schema.structural(spec_rollout.RolloutSpec)["properties"]["maxSurge"]
    assert surge["x-kubernetes-int-or-string"] is True
    assert surge["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert surge["pattern"] == spec_fields.PERCENT_PATTERN
