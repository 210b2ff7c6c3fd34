"""Benchmarks are scripts, not a package: their rules are tested by loading them as modules."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import types

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load(script: str, name: str) -> types.ModuleType:
    """``benchmarks/<script>`` loaded as module ``name`` (registered in ``sys.modules``)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / script)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
