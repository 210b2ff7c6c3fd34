"""``spec.runtime.decode`` reaches the runtime as ``cameraDecode``: one field, both parts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from its_operator.api import crdgen, resource
from its_operator.builders import configmap
from its_runtime import config as rc

Make = Callable[..., resource.Pipeline]


def rendered(p: resource.Pipeline) -> rc.RuntimeConfig:
    return rc.RuntimeConfig.from_yaml(configmap.build(p)["data"][rc.CONFIGMAP_KEY])


def test_decode_defaults_to_auto_and_is_rendered_for_the_runtime(make_pipeline: Make) -> None:
    p = make_pipeline()
    assert p.spec.runtime.decode == "auto"
    assert rendered(p).camera_decode == "auto"
    for mode in ("cpu", "gpu"):
        p = make_pipeline(runtime={"image": "i", "decode": mode})
        assert rendered(p).camera_decode == mode
        text = configmap.build(p)["data"][rc.CONFIGMAP_KEY]
        assert f"cameraDecode: {mode}" in text


def test_an_unknown_decode_mode_is_rejected_naming_the_field(make_pipeline: Make) -> None:
    with pytest.raises(resource.InvalidSpecError) as err:
        make_pipeline(runtime={"image": "i", "decode": "nvdec"})
    assert "spec.runtime.decode" in str(err.value)


def test_the_crd_documents_the_field_for_kubectl_explain() -> None:
    crd: Any = yaml.safe_load(crdgen.render()[crdgen.PIPELINE_FILE])
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    field = schema["properties"]["spec"]["properties"]["runtime"]["properties"]["decode"]
    assert field["enum"] == ["auto", "cpu", "gpu"]
    assert field["default"] == "auto"
    assert "NVDEC" in field["description"]
    assert "falls back to the CPU" in field["description"]
