"""The executor ``its-runtime`` gives the batcher before the engine exists."""

from __future__ import annotations

import pathlib

import pytest
import torch

from its_runtime import config
from its_runtime.engine import plan
from its_runtime.engine.lazy import LazyEngine

#: Starts processes or compiles models: outside `make check`'s fast loop.
pytestmark = pytest.mark.slow


def test_lazy_engine_reports_the_loaded_engines_device_and_staging(
    exported_models: dict[str, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    cfg = config.RuntimeConfig(
        model=config.ModelConfig(
            path=str(exported_models["fast"]),
            input_shape=[3, 64, 64],
            output_format="yolo",
            backend="eager",
            batching=config.BatchingConfig(max_batch_size=8, opt_batch_size=4),
        ),
        engine_cache=config.EngineCacheConfig(dir=str(tmp_path / "engines")),
    )
    lazy = LazyEngine(cfg, plan.from_config(cfg.model.batching))
    # Before loading, the batcher must not decide on staging (device unknown).
    assert lazy.device is None
    assert lazy.accepts_device_batches is False
    assert lazy.input_shape == (3, 64, 64)
    assert lazy.max_batch_size == 8

    lazy.load_and_warm_up()
    assert lazy.engine is not None
    assert lazy.device == lazy.engine.device
    assert lazy.accepts_device_batches is (lazy.engine.device.type == "cuda")
    assert len(lazy.run_batch(torch.rand(3, 3, 64, 64))) == 3
