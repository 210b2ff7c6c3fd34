"""Model files written once per session from detectors built in code (no downloads).

Every engine test loads real files through the real loaders: a tiny YOLO-style net
(3x64x64 input, 5 classes) as an exported program, as TorchScript and as a prebuilt
AOTInductor package, plus a torchvision-style variant. They are tiny so that compiling
them on 2 cores takes seconds, not minutes.

Inductor's own cache stays where it is by default (``/tmp``), shared by all tests
and their child processes: otherwise ``Engine.load`` would move it onto each test's
temporary engine cache and every test would pay Inductor's first-start probes again.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch._inductor.runtime.cache_dir_utils import default_cache_dir

from its_runtime import config
from its_runtime.kits.models import export, yolo

os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())

SHAPE = (3, 64, 64)
CLASSES = 5
MAX_BATCH = 4


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_net() -> torch.nn.Module:
    return yolo.build_yolo(CLASSES, width=4)


@pytest.fixture(scope="session")
def exported_path(model_dir: pathlib.Path, tiny_net: torch.nn.Module) -> pathlib.Path:
    return export.save_exported_program(tiny_net, model_dir / "tiny.pt2", SHAPE, MAX_BATCH)


@pytest.fixture(scope="session")
def torchscript_path(model_dir: pathlib.Path, tiny_net: torch.nn.Module) -> pathlib.Path:
    return export.save_torchscript(tiny_net, model_dir / "tiny.ts", SHAPE)


@pytest.fixture(scope="session")
def aoti_package_path(model_dir: pathlib.Path, tiny_net: torch.nn.Module) -> pathlib.Path:
    return export.save_aoti_package(tiny_net, model_dir / "tiny-aoti.pt2", SHAPE, MAX_BATCH)


@pytest.fixture(scope="session")
def torchvision_style_path(model_dir: pathlib.Path) -> pathlib.Path:
    net = yolo.build_torchvision_style(CLASSES, width=4, top_k=10)
    return export.save_exported_program(
        net, model_dir / "tiny-tv.pt2", SHAPE, max_batch=2, dynamic_batch=False
    )


ModelConfigFactory = Callable[..., config.ModelConfig]


@pytest.fixture
def model_config() -> ModelConfigFactory:
    """A ModelConfig for the tiny models: 3x64x64, yolo output, batch up to 4."""

    def make(path: pathlib.Path, **overrides: Any) -> config.ModelConfig:
        batching = overrides.pop("batching", {"maxBatchSize": MAX_BATCH, "optBatchSize": 2})
        data: dict[str, Any] = {
            "path": str(path),
            "inputShape": list(SHAPE),
            "outputFormat": "yolo",
            "scoreThreshold": 0.0,
            "batching": batching,
            **overrides,
        }
        return config.ModelConfig.model_validate(data)

    return make


@pytest.fixture
def cache_config(tmp_path: pathlib.Path) -> config.EngineCacheConfig:
    return config.EngineCacheConfig(dir=str(tmp_path / "engine-cache"))


@pytest.fixture(scope="session")
def built_cache(
    tmp_path_factory: pytest.TempPathFactory, exported_path: pathlib.Path
) -> pathlib.Path:
    """An engine cache holding the tiny model's AOTInductor build (built once)."""
    from its_runtime.engine import Engine

    directory = tmp_path_factory.mktemp("built-cache")
    cfg = config.ModelConfig.model_validate(
        {
            "path": str(exported_path),
            "inputShape": list(SHAPE),
            "outputFormat": "yolo",
            "scoreThreshold": 0.0,
            "backend": "aotinductor",
            "batching": {"maxBatchSize": MAX_BATCH, "optBatchSize": 2},
        }
    )
    Engine.load(cfg, config.EngineCacheConfig(dir=str(directory)), config.GpuConfig())
    return directory


@pytest.fixture
def warm_cache_config(
    built_cache: pathlib.Path, tmp_path: pathlib.Path
) -> config.EngineCacheConfig:
    """A private copy of ``built_cache`` (tests may damage theirs)."""
    import shutil

    directory = tmp_path / "warm-cache"
    shutil.copytree(built_cache, directory)
    return config.EngineCacheConfig(dir=str(directory))


def assert_same_boxes(got: Any, want: Any, atol: float = 1e-4) -> None:
    """Same detections, ignoring order: near-tied scores may sort either way."""
    import numpy as np

    assert got.shape == want.shape

    def rows(a: Any) -> Any:
        return a[np.lexsort(np.round(a, 3).T[::-1])]

    np.testing.assert_allclose(rows(got), rows(want), atol=atol)
