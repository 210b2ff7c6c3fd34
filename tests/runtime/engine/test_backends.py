"""Backend choice: the fastest that works, every fallback recorded with its cause."""

from __future__ import annotations

import pathlib
import warnings

import numpy as np
import pytest
import torch

from its_runtime import config
from its_runtime.engine import Engine, EngineLoadError, postprocess

from .conftest import SHAPE, ModelConfigFactory, assert_same_boxes

GPU = config.GpuConfig()
needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU choice")


def _eager_boxes(net: torch.nn.Module, frames: torch.Tensor) -> list[np.ndarray]:
    with torch.inference_mode():
        out = net(frames)
    dets = postprocess.from_yolo(
        out, batch=frames.shape[0], input_hw=SHAPE[1:], score_threshold=0.0, iou_threshold=0.5
    )
    return [d.boxes for d in dets]


@pytest.mark.slow
@needs_no_cuda
def test_auto_on_cpu_skips_tensorrt_with_its_cause_and_runs_aotinductor(
    exported_path: pathlib.Path,
    tiny_net: torch.nn.Module,
    model_config: ModelConfigFactory,
    warm_cache_config: config.EngineCacheConfig,
) -> None:
    engine = Engine.load(model_config(exported_path), warm_cache_config, GPU)
    engine.warmup()

    assert engine.backend == "aotinductor"
    assert engine.fallbacks == [("tensorrt", "no CUDA device")]
    assert engine.precision == "fp32"  # fp16 is asked for by default, and unused on CPU
    assert engine.origin == "cache"  # the build in ``built_cache`` (same key)
    frames = torch.rand(3, *SHAPE)  # 3 is not a bucket: the dynamic batch runs it as is
    for got, want in zip(engine.run_batch(frames), _eager_boxes(tiny_net, frames), strict=True):
        assert_same_boxes(got.boxes, want)
    assert engine.describe()["fallbacks"] == [{"backend": "tensorrt", "cause": "no CUDA device"}]


@pytest.mark.slow
def test_compile_backend_runs_fixed_buckets_without_recompiling(
    exported_path: pathlib.Path,
    tiny_net: torch.nn.Module,
    model_config: ModelConfigFactory,
    cache_config: config.EngineCacheConfig,
) -> None:
    from torch._dynamo.utils import counters

    cfg = model_config(
        exported_path, backend="compile", batching={"maxBatchSize": 2, "optBatchSize": 2}
    )
    engine = Engine.load(cfg, cache_config, GPU)
    engine.warmup()
    graphs_after_warmup = counters["stats"]["unique_graphs"]

    for n in (1, 2, 1, 2):
        frames = torch.rand(n, *SHAPE)
        got = engine.run_batch(frames)
        assert len(got) == n
        for d, want in zip(got, _eager_boxes(tiny_net, frames), strict=True):
            assert_same_boxes(d.boxes, want)

    assert engine.backend == "compile"
    assert engine.fallbacks == []
    assert counters["stats"]["unique_graphs"] == graphs_after_warmup  # no recompiles


class _DataDependentLoop(torch.nn.Module):
    """Scriptable, but its loop count depends on the data: it cannot be exported."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 9, 8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw: torch.Tensor = self.conv(x).flatten(2).transpose(1, 2).sigmoid() * 64
        for _ in range(int(raw.max().item() > 1000.0)):
            raw = raw * 1.0
        return raw


def test_unexportable_torchscript_falls_back_to_eager_with_each_cause(
    tmp_path: pathlib.Path,
    model_config: ModelConfigFactory,
    cache_config: config.EngineCacheConfig,
) -> None:
    path = tmp_path / "loop.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(_DataDependentLoop().eval()), str(path))

    engine = Engine.load(model_config(path, format="TorchScript"), cache_config, GPU)

    assert engine.backend == "eager"
    tried = [backend for backend, _ in engine.fallbacks]
    expected = ["aotinductor", "compile"]
    if not torch.cuda.is_available():
        expected.insert(0, "tensorrt")
    assert tried == expected
    assert all(
        "prim::Loop" in cause for backend, cause in engine.fallbacks if backend != "tensorrt"
    )
    # Two builds were attempted and failed (the missing GPU is no build failure).
    assert engine.cache_stats.build_failures >= 2
    assert len(engine.run_batch(torch.rand(2, *SHAPE))) == 2


@needs_no_cuda
def test_forcing_tensorrt_without_cuda_fails_with_the_cause(
    exported_path: pathlib.Path,
    model_config: ModelConfigFactory,
    cache_config: config.EngineCacheConfig,
) -> None:
    with pytest.raises(
        EngineLoadError, match=r"model\.backend tensorrt cannot run .*no CUDA device"
    ):
        Engine.load(model_config(exported_path, backend="tensorrt"), cache_config, GPU)


def test_forcing_eager_uses_eager_with_no_fallbacks(
    exported_path: pathlib.Path,
    model_config: ModelConfigFactory,
    cache_config: config.EngineCacheConfig,
) -> None:
    engine = Engine.load(model_config(exported_path, backend="eager"), cache_config, GPU)
    assert (engine.backend, engine.fallbacks, engine.origin) == ("eager", [], "none")
    assert engine.cache_stats.as_dict() == dict.fromkeys(engine.cache_stats.as_dict(), 0)


@pytest.mark.slow
def test_an_aoti_package_cannot_be_forced_onto_another_backend(
    aoti_package_path: pathlib.Path,
    model_config: ModelConfigFactory,
    cache_config: config.EngineCacheConfig,
) -> None:
    cfg = model_config(aoti_package_path, format="AOTInductorPackage", backend="compile")
    with pytest.raises(EngineLoadError, match=r"AOTInductor package, which runs only as itself"):
        Engine.load(cfg, cache_config, GPU)


def test_memory_stats_are_empty_on_cpu(
    exported_path: pathlib.Path,
    model_config: ModelConfigFactory,
    cache_config: config.EngineCacheConfig,
) -> None:
    engine = Engine.load(model_config(exported_path, backend="eager"), cache_config, GPU, "cpu")
    assert engine.memory_stats() == {}


def test_asking_for_cuda_without_it_is_a_clear_error(
    exported_path: pathlib.Path,
    model_config: ModelConfigFactory,
    cache_config: config.EngineCacheConfig,
) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(EngineLoadError, match="CUDA is not available"):
        Engine.load(model_config(exported_path), cache_config, GPU, "cuda")
