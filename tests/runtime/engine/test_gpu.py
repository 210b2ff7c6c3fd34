"""The engine on a CUDA device: TensorRT when importable, else compiled PyTorch.

Skipped without a GPU; run by ``benchmarks/gpu_check.sh`` on a lent GPU machine.
"""

from __future__ import annotations

import importlib.util
import pathlib

import pytest
import torch

from its_runtime import config
from its_runtime.engine import Engine

from .conftest import SHAPE, ModelConfigFactory

pytestmark = pytest.mark.gpu


def test_auto_on_cuda_picks_the_fastest_available_backend(
    exported_path: pathlib.Path,
    model_config: ModelConfigFactory,
    cache_config: config.EngineCacheConfig,
) -> None:
    gpu = config.GpuConfig(memory_fraction=0.5)
    engine = Engine.load(model_config(exported_path, precision="fp16"), cache_config, gpu)
    engine.warmup()

    expected = "tensorrt" if importlib.util.find_spec("torch_tensorrt") else "aotinductor"
    assert engine.backend == expected, engine.fallbacks
    host = engine.run_batch(torch.rand(3, *SHAPE))
    device = engine.run_batch(torch.rand(2, *SHAPE, device=engine.device))  # batcher-staged
    assert len(host) == 3
    assert len(device) == 2
    stats = engine.memory_stats()
    assert stats["allocated_bytes"] > 0
    assert stats["peak_allocated_bytes"] >= stats["allocated_bytes"]

    again = Engine.load(model_config(exported_path, precision="fp16"), cache_config, gpu)
    assert again.backend == expected
    assert again.cache_stats.builds == 0


def test_eager_on_cuda_runs_fp16_autocast(
    exported_path: pathlib.Path,
    model_config: ModelConfigFactory,
    cache_config: config.EngineCacheConfig,
) -> None:
    cfg = model_config(exported_path, backend="eager", precision="fp16")
    engine = Engine.load(cfg, cache_config, config.GpuConfig())
    engine.warmup()
    assert engine.precision == "fp16"
    assert len(engine.run_batch(torch.rand(4, *SHAPE))) == 4


def test_cuda_graphs_replay_the_same_detections_as_the_plain_forward(
    exported_path: pathlib.Path,
    model_config: ModelConfigFactory,
    cache_config: config.EngineCacheConfig,
) -> None:
    cfg = model_config(exported_path, precision="fp16")
    plain = Engine.load(cfg, cache_config, config.GpuConfig())
    plain.warmup()
    graphed = Engine.load(cfg, cache_config, config.GpuConfig(cuda_graphs=True))
    graphed.warmup()
    assert graphed.describe()["cuda_graphs"] == list(graphed.buckets), graphed.fallbacks
    torch.manual_seed(3)
    for n in (1, 3, 4):
        batch = torch.rand(n, *SHAPE)
        want, got = plain.run_batch(batch), graphed.run_batch(batch)
        assert len(got) == n
        for a, b in zip(want, got, strict=True):
            assert len(a) == len(b)
            assert torch.allclose(torch.from_numpy(a.boxes), torch.from_numpy(b.boxes), atol=2e-3)
