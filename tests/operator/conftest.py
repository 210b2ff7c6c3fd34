"""Fixtures shared by the operator's unit and cluster tests: sample pipelines."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from its_operator.api import resource

SAMPLE_SPEC: dict[str, Any] = {
    "model": {"path": "/models/det.pt2", "precision": "fp16"},
    "runtime": {"image": "registry.local/its-runtime:0.1.0"},
    "cameras": [{"name": "cam-1", "url": "rtsp://cams.local/1", "fps": 15}],
}


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def sample_spec(**patch: Any) -> dict[str, Any]:
    return merge(SAMPLE_SPEC, patch)


@pytest.fixture
def spec_of() -> Callable[..., dict[str, Any]]:
    """The sample spec with a deep-merged patch (a fixture, so no test imports conftest)."""
    return sample_spec


@pytest.fixture
def make_pipeline() -> Callable[..., resource.Pipeline]:
    def make(name: str = "demo", namespace: str = "ns", **patch: Any) -> resource.Pipeline:
        body = {
            "metadata": {"name": name, "namespace": namespace, "uid": "uid-1", "generation": 3},
            "spec": sample_spec(**patch),
        }
        return resource.parse(body)

    return make
