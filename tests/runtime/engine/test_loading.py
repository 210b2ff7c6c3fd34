"""Loading each model format, and refusing bad ones at start with a clear message."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

from its_runtime import config
from its_runtime.engine import Engine, EngineLoadError, postprocess
from its_runtime.kits.models import export, yolo

from .conftest import SHAPE, ModelConfigFactory, assert_same_boxes

GPU = config.GpuConfig()


def _reference(net: torch.nn.Module, frames: torch.Tensor) -> list[np.ndarray]:
    with torch.inference_mode():
        out = net(frames)
    dets = postprocess.from_yolo(
        out, batch=frames.shape[0], input_hw=SHAPE[1:], score_threshold=0.0, iou_threshold=0.5
    )
    return [d.boxes for d in dets]


@pytest.mark.parametrize(
    ("fixture", "fmt"),
    [
        ("exported_path", "ExportedProgram"),
        ("torchscript_path", "TorchScript"),
        # Compiling the package takes half a minute: outside `make check`.
        pytest.param("aoti_package_path", "AOTInductorPackage", marks=pytest.mark.slow),
    ],
)
def test_each_format_loads_and_gives_the_models_detections(
    request: pytest.FixtureRequest,
    fixture: str,
    fmt: str,
    tiny_net: torch.nn.Module,
    model_config: ModelConfigFactory,
    cache_config: config.EngineCacheConfig,
) -> None:
    path: pathlib.Path = request.getfixturevalue(fixture)
    backend = "auto" if fmt == "AOTInductorPackage" else "eager"
    engine = Engine.load(model_config(path, format=fmt, backend=backend), cache_config, GPU)
    engine.warmup()

    frames = torch.rand(3, *SHAPE)
    dets = engine.run_batch(frames)

    assert engine.backend == ("aotinductor" if fmt == "AOTInductorPackage" else "eager")
    assert len(dets) == 3
    for got, want in zip(dets, _reference(tiny_net, frames), strict=True):
        assert len(got) > 0
        assert_same_boxes(got.boxes, want)
        assert got.boxes.min() >= 0
        assert got.boxes.max() <= 1


def test_missing_model_file_names_the_path(
    tmp_path: pathlib.Path, model_config: ModelConfigFactory, cache_config: config.EngineCacheConfig
) -> None:
    missing = tmp_path / "nope.pt2"
    with pytest.raises(EngineLoadError, match=r"nope\.pt2 does not exist.*model\.path"):
        Engine.load(model_config(missing), cache_config, GPU)


def test_input_shape_mismatch_names_expected_and_configured_shapes(
    exported_path: pathlib.Path,
    model_config: ModelConfigFactory,
    cache_config: config.EngineCacheConfig,
) -> None:
    cfg = model_config(exported_path, inputShape=[3, 96, 96])
    with pytest.raises(EngineLoadError) as err:
        Engine.load(cfg, cache_config, GPU)
    message = str(err.value)
    assert "(N, 3, 64, 64)" in message
    assert "(N, 3, 96, 96)" in message
    assert "inputShape" in message


def test_input_dtype_mismatch_is_refused(
    model_dir: pathlib.Path,
    model_config: ModelConfigFactory,
    cache_config: config.EngineCacheConfig,
) -> None:
    net = yolo.build_yolo(5, width=4).double()
    path = model_dir / "double.pt2"
    ep = torch.export.export(net, (torch.rand(2, *SHAPE, dtype=torch.float64),))
    torch.export.save(ep, str(path))
    with pytest.raises(EngineLoadError, match=r"expects input dtype torch\.float64.*float32"):
        Engine.load(
            model_config(path, batching={"maxBatchSize": 2, "optBatchSize": 2}), cache_config, GPU
        )


def test_a_file_of_another_format_says_to_check_model_format(
    torchscript_path: pathlib.Path,
    model_config: ModelConfigFactory,
    cache_config: config.EngineCacheConfig,
) -> None:
    cfg = model_config(torchscript_path, format="ExportedProgram")
    with pytest.raises(
        EngineLoadError, match=r"could not be loaded as ExportedProgram.*model\.format"
    ):
        Engine.load(cfg, cache_config, GPU)


def test_torchscript_of_another_input_size_fails_its_probe(
    model_dir: pathlib.Path,
    model_config: ModelConfigFactory,
    cache_config: config.EngineCacheConfig,
) -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 9)).eval()
    path = model_dir / "linear32.ts"
    export.save_torchscript(net, path, (3, 32, 32))
    cfg = model_config(path, format="TorchScript", backend="eager")
    with pytest.raises(EngineLoadError, match=r"failed on an input of shape \(1, 3, 64, 64\)"):
        Engine.load(cfg, cache_config, GPU)


def test_output_not_matching_output_format_is_refused(
    exported_path: pathlib.Path,
    model_config: ModelConfigFactory,
    cache_config: config.EngineCacheConfig,
) -> None:
    cfg = model_config(exported_path, outputFormat="torchvision")
    with pytest.raises(EngineLoadError, match=r"outputFormat torchvision.*list of"):
        Engine.load(cfg, cache_config, GPU)


def test_fixed_batch_export_pads_every_batch_to_its_size(
    torchvision_style_path: pathlib.Path,
    model_config: ModelConfigFactory,
    cache_config: config.EngineCacheConfig,
) -> None:
    cfg = model_config(
        torchvision_style_path,
        outputFormat="torchvision",
        backend="eager",
        batching={"maxBatchSize": 2, "optBatchSize": 2},
    )
    engine = Engine.load(cfg, cache_config, GPU)
    engine.warmup()

    assert engine.buckets == (2,)
    one = engine.run_batch(torch.rand(1, *SHAPE))
    assert len(one) == 1
    assert len(one[0]) == 10


def test_fixed_batch_export_with_another_max_batch_explains_the_fix(
    torchvision_style_path: pathlib.Path,
    model_config: ModelConfigFactory,
    cache_config: config.EngineCacheConfig,
) -> None:
    cfg = model_config(torchvision_style_path, outputFormat="torchvision")  # maxBatchSize 4
    with pytest.raises(EngineLoadError, match=r"fixed batch size of 2.*maxBatchSize to 2"):
        Engine.load(cfg, cache_config, GPU)


def test_run_batch_rejects_frames_of_the_wrong_shape(
    exported_path: pathlib.Path,
    model_config: ModelConfigFactory,
    cache_config: config.EngineCacheConfig,
) -> None:
    engine = Engine.load(model_config(exported_path, backend="eager"), cache_config, GPU)
    with pytest.raises(ValueError, match=r"expected \(B, 3, 64, 64\)"):
        engine.run_batch(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"outside 1\.\.4"):
        engine.run_batch(torch.rand(5, *SHAPE))
    assert len(engine.run_batch(torch.rand(1, *SHAPE))) == 1  # still serving


@pytest.mark.slow
def test_export_cli_writes_a_loadable_program(
    tmp_path: pathlib.Path, model_config: ModelConfigFactory, cache_config: config.EngineCacheConfig
) -> None:
    out = tmp_path / "cli.pt2"
    export.main([str(out), "--arch", "yolo", "--width", "4", "--input-shape", "3", "64", "64"])
    engine = Engine.load(model_config(out, backend="eager"), cache_config, GPU)
    assert engine.input_shape == SHAPE
