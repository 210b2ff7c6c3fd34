"""``gpu.cudaGraphs`` on a machine without CUDA: accepted, inert, and said so."""

from __future__ import annotations

import pathlib

import torch

from its_runtime import config
from its_runtime.engine import Engine

from .conftest import SHAPE, ModelConfigFactory


def test_cuda_graphs_on_the_cpu_change_nothing(
    exported_path: pathlib.Path,
    model_config: ModelConfigFactory,
    cache_config: config.EngineCacheConfig,
) -> None:
    cfg = model_config(exported_path, backend="eager")
    engine = Engine.load(cfg, cache_config, config.GpuConfig(cuda_graphs=True), device="cpu")
    engine.warmup()
    assert engine.describe()["cuda_graphs"] == []
    assert not any(b == "cuda-graph" for b, _ in engine.fallbacks)
    assert len(engine.run_batch(torch.rand(3, *SHAPE))) == 3
