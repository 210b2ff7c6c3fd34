"""The tree keeps the shape the README's Layout section describes: rooms small enough
to read (no module over 400 lines, no class over 250) in the product packages."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = [ROOT / "runtime" / "its_runtime", ROOT / "operator" / "its_operator"]
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 250


def _modules() -> list[pathlib.Path]:
    return sorted(p for pkg in PACKAGES for p in pkg.rglob("*.py"))


def test_the_product_packages_have_modules() -> None:
    assert len(_modules()) > 50


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_or_class_outgrows_its_room(path: pathlib.Path) -> None:
    text = path.read_text(encoding="utf-8")
    lines = len(text.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{lines} lines: split it by responsibility"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            assert size <= MAX_CLASS_LINES, f"class {node.name} has {size} lines"
