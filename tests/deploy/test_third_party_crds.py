"""The third-party CRDs the overlay dry runs use come from the pinned Go modules, and a
module whose sum is not the pinned one is refused (nothing is copied)."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest
import yaml

from its_devenv import third_party_crds


def test_a_fresh_cache_gets_the_real_crds_of_the_three_kinds(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ITS_CACHE_DIR", str(tmp_path))
    paths = third_party_crds.ensure()
    crds = [yaml.safe_load(p.read_text()) for p in paths]
    assert {c["spec"]["names"]["kind"] for c in crds} == {
        "ServiceMonitor",
        "PrometheusRule",
        "ScaledObject",
    }
    assert all(p.is_relative_to(tmp_path / "crds") for p in paths)
    assert paths[-1].parent == tmp_path / "crds" / "github.com/kedacore/keda/v2@v2.21.0"
    # Real schemas, not stand-ins: the fields the negative dry runs rely on are required.
    keda = next(c for c in crds if c["spec"]["names"]["kind"] == "ScaledObject")
    spec = keda["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert "scaleTargetRef" in spec["required"]
    assert third_party_crds.ensure() == paths  # the second call copies nothing new


def test_a_module_whose_sum_differs_from_the_pin_is_refused(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ITS_CACHE_DIR", str(tmp_path))
    wrong = dataclasses.replace(third_party_crds.MODULES[1], sum="h1:" + "A" * 43 + "=")
    monkeypatch.setattr(third_party_crds, "MODULES", (wrong,))
    with pytest.raises(RuntimeError, match=r"has sum h1:R6z2HZ.*pinned h1:AAAA"):
        third_party_crds.ensure()
    assert not third_party_crds.cache_dir(wrong).exists()
