"""Argo CD reads an AnalyticsPipeline's health right from its status."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from tests.deploy import argocd

SAMPLES = sorted((argocd.HEALTH_LUA.parent / "testdata").glob("*.yaml"))


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_health_check_matches_the_expected_status(sample: pathlib.Path) -> None:
    text = sample.read_text()
    expected = text.splitlines()[0].removeprefix("# expected health: ").strip()
    status, message = argocd.health(yaml.safe_load(text))
    assert status == expected, message


def test_degraded_message_carries_the_cause() -> None:
    obj = yaml.safe_load(
        (argocd.HEALTH_LUA.parent / "testdata" / "degraded-deadline.yaml").read_text()
    )
    status, message = argocd.health(obj)
    assert status == "Degraded"
    assert "Insufficient nvidia.com/gpu" in message


def test_samples_cover_every_health_state() -> None:
    states = {p.read_text().splitlines()[0].rsplit(" ", 1)[1] for p in SAMPLES}
    assert {"Healthy", "Progressing", "Degraded", "Suspended"} <= states
