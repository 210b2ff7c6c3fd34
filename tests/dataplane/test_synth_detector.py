"""The generated-traffic detector as a model file the engine serves.

``export_synth_detector`` must give a ``.pt2`` that :class:`its_runtime.engine.Engine`
loads like any trained model and that finds exactly what the in-process
``ColourBoxDetector`` finds (the tests of the data plane rely on that one), with the
class ids the runtime's class names expect, at every batch size.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from its_runtime import config
from its_runtime.detections import Detections
from its_runtime.engine import Engine, EngineLoadError
from its_runtime.kits import synth, synth_detector
from tests.dataplane.support import INPUT_SHAPE

MAX_BATCH = 8


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("synth-model") / "synth.pt2"
    return synth_detector.export_synth_detector(path, INPUT_SHAPE, MAX_BATCH)


@pytest.fixture(scope="module")
def engine(model_file: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    model = synth_detector.model_config(
        model_file, INPUT_SHAPE, MAX_BATCH, backend=config.Backend.EAGER
    )
    cache = config.EngineCacheConfig(dir=str(tmp_path_factory.mktemp("engines")))
    engine = Engine.load(model, cache, config.GpuConfig(), device="cpu")
    engine.warmup()
    return engine


def scene_frames(scene: synth.Scene, every: int) -> torch.Tensor:
    """Rendered frames scaled to the model input, as the camera pipeline feeds them."""
    frames = []
    for i in range(0, scene.frame_count, every):
        image = torch.from_numpy(scene.render(i)).permute(2, 0, 1).float().div(255.0)
        frames.append(F.interpolate(image[None], size=INPUT_SHAPE[1:], mode="bilinear")[0])
    return torch.stack(frames)


def ordered(d: Detections) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.lexsort((d.boxes[:, 1], d.boxes[:, 0])) if len(d.boxes) else np.arange(0)
    return d.boxes[order], d.scores[order], d.classes[order]


@pytest.mark.slow
def test_the_exported_detector_finds_what_the_in_process_one_finds(
    engine: Engine, scene: synth.Scene
) -> None:
    frames = scene_frames(scene, every=9)[:MAX_BATCH]
    expected = synth_detector.ColourBoxDetector(INPUT_SHAPE).run_batch(frames)
    got = engine.run_batch(frames)
    assert len(got) == len(expected) == MAX_BATCH
    seen: set[int] = set()
    for g, e in zip(got, expected, strict=True):
        g_boxes, g_scores, g_classes = ordered(g)
        e_boxes, e_scores, e_classes = ordered(e)
        assert g_classes.tolist() == e_classes.tolist()
        np.testing.assert_allclose(g_boxes, e_boxes, atol=1e-6)
        np.testing.assert_allclose(g_scores, e_scores, atol=1e-5)
        seen.update(g_classes.tolist())
    assert seen == {synth_detector.CAR, synth_detector.TRUCK}
    names = engine.model.class_names
    assert (names[synth_detector.CAR], names[synth_detector.TRUCK]) == ("car", "truck")


def test_every_batch_size_up_to_the_maximum_runs_without_padding(
    engine: Engine, scene: synth.Scene
) -> None:
    frames = scene_frames(scene, every=5)[:MAX_BATCH]
    full = engine.run_batch(frames)
    for n in (1, 3, 5, MAX_BATCH):
        part = engine.run_batch(frames[:n])
        assert len(part) == n
        for a, b in zip(part, full[:n], strict=True):
            np.testing.assert_allclose(a.boxes, b.boxes)
            assert a.classes.tolist() == b.classes.tolist()
    assert engine.backend == "eager"


def test_an_empty_road_yields_no_detections(engine: Engine) -> None:
    road = torch.tensor(synth.ROAD, dtype=torch.float32).div(255.0).view(3, 1, 1)
    frames = road.expand(2, *INPUT_SHAPE).contiguous()
    assert [len(d.boxes) for d in engine.run_batch(frames)] == [0, 0]


def test_the_engine_refuses_the_file_for_another_input_size(
    model_file: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    model = synth_detector.model_config(model_file, (3, 128, 160), MAX_BATCH, backend="eager")
    with pytest.raises(EngineLoadError, match=r"expects input shape \(N, 3, 96, 160\)"):
        Engine.load(model, config.EngineCacheConfig(dir=str(tmp_path)), config.GpuConfig())


@pytest.mark.slow
def test_the_command_line_writes_a_loadable_program(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.pt2"
    synth_detector.main(["--out", str(out), "--input-shape", "3", "64", "96", "--max-batch", "2"])
    assert capsys.readouterr().out.strip() == str(out)
    program = torch.export.load(str(out))
    with torch.inference_mode():
        raw = program.module()(torch.zeros(2, 3, 64, 96))
    # One candidate per class channel and 4x4 cell; cx, cy, w, h + background, car, truck.
    assert tuple(raw.shape) == (2, 2 * 16 * 24, 7)
    assert float(raw[..., 4:].abs().max()) == 0.0


def test_the_command_line_rejects_a_single_channel_shape(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        synth_detector.main(["--out", str(tmp_path / "x.pt2"), "--input-shape", "1", "96", "160"])
    assert exit_info.value.code == 2
    assert "input_shape must be (3, height, width), got [1, 96, 160]" in capsys.readouterr().err
    assert not (tmp_path / "x.pt2").exists()
