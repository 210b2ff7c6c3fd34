"""Kubernetes quantities parse exactly (the engine cache is sized from them)."""

from __future__ import annotations

import decimal

import pytest

from its_operator.api import quantities


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("20Gi", 20 * 2**30),
        ("500m", decimal.Decimal("0.5")),
        ("1e3", 1000),
        ("1.5k", 1500),
        ("2", 2),
        ("1E", 10**18),
    ],
)
def test_parse(text: str, value: object) -> None:
    assert quantities.parse(text) == value


def test_garbage_is_named() -> None:
    with pytest.raises(ValueError, match="'lots'"):
        quantities.parse("lots")
    assert not quantities.same("lots", "lots")
