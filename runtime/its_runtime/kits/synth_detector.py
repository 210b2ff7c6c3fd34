"""A real torch detector with hand-set weights that finds the generated vehicles.

It stands in for a trained model wherever the generated scenes of
:mod:`its_runtime.kits.synth` are analysed (tests, benchmarks, demos), and it is
a genuine network run by torch on every frame, not a lookup of the ground truth:

1. a 1x1 convolution with set weights scores every pixel per class (red minus blue
   for cars, blue minus red for trucks; the grey road scores zero);
2. a sigmoid and threshold give per-class masks, cleaned by a 3x3 opening
   (min-pool then max-pool) so single noisy pixels vanish;
3. connected components are labelled by iterated 3x3 max-pooling of cell indices
   within the mask (every cell ends up holding its component's largest index), on a
   grid 4x coarser than the input, then carried back to full resolution (objects
   closer than 4 pixels merge; the drawn vehicles never are);
4. boxes are the per-label min/max of pixel coordinates (``scatter_reduce``), and
   scores the mean pixel score of each component.

Two ways to run it:

* :class:`ColourBoxDetector` implements the batcher's ``BatchExecutor`` protocol
  (``max_batch_size``, ``input_shape``, ``pipeline_depth``, ``stage``, ``run_batch``),
  so it plugs into :class:`its_runtime.serving.batching.DynamicBatcher` exactly where
  the engine does, in process, with no model file. Labelling stops as soon as the
  labels stop changing.
* :class:`ColourBoxYolo` is the same network made ``torch.export``-able, so the real
  ``its-runtime`` process loads it from a ``.pt2`` file through
  :class:`its_runtime.engine.Engine` like any trained model. Export forbids
  data-dependent control flow, so labelling runs a fixed number of steps (the coarse
  grid's height plus width: enough for any vehicle-shaped blob), and step 4 becomes a
  ``scatter_reduce`` into one fixed slot per coarse cell (a component's label is its
  largest cell index, so slots never collide). The output is the raw ``yolo`` format
  of :mod:`its_runtime.engine.postprocess`: ``(B, N, 4 + K)`` rows of ``cx, cy, w, h`` in
  input pixels and K class scores, where column ``k`` is class id ``k`` (column 0,
  background, stays zero; cars score in column 1, trucks in column 2). Empty slots
  and blobs under ``min_area_px`` score 0, so thresholding drops them.
  :func:`export_synth_detector` writes it with a dynamic batch dimension, and
  ``python -m its_runtime.kits.synth_detector --out PATH`` does the same.
"""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from its_runtime import config
from its_runtime.detections import Detections
from its_runtime.kits.models import export

#: Class ids the detector reports, in the runtime's default class-name order.
CAR = 1
TRUCK = 2
#: ``model.classNames`` for the exported detector: index = class id = score column.
CLASS_NAMES = ("background", "car", "truck")
#: Side of a labelling cell, in input pixels (see step 3 of the module docstring).
CELL = 4


def coarse_cells(height: int, width: int) -> tuple[int, int]:
    """The labelling grid's (rows, columns) for an input of ``height`` x ``width``."""
    return -(-height // CELL), -(-width // CELL)


class ColourBoxNet(nn.Module):
    """Steps 1-3: per-class pixel scores and connected-component labels.

    ``stop_early`` ends labelling once the labels stop changing (fast in eager mode);
    without it labelling always runs the grid's rows + columns steps (exportable).
    """

    def __init__(
        self, *, min_area_px: int = 12, max_iterations: int = 256, stop_early: bool = True
    ) -> None:
        super().__init__()
        self.score = nn.Conv2d(3, 2, kernel_size=1)
        weight = torch.tensor([[1.0, 0.0, -1.0], [-1.0, 0.0, 1.0]]).view(2, 3, 1, 1)
        self.score.weight = nn.Parameter(weight * 12.0, requires_grad=False)
        self.score.bias = nn.Parameter(torch.tensor([-0.35, -0.35]) * 12.0, requires_grad=False)
        self.min_area_px = min_area_px
        self.max_iterations = max_iterations
        self.stop_early = stop_early

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) in 0..1 -> (per-class pixel scores, component labels), (B, 2, H, W).

        Both are float32 whatever autocast does to the convolution, so labels (cell
        indices) stay exact.
        """
        scores = torch.sigmoid(self.score(x)).float()
        mask = (scores > 0.5).float()
        mask = -F.max_pool2d(-mask, 3, stride=1, padding=1)  # erode
        mask = F.max_pool2d(mask, 3, stride=1, padding=1)  # dilate
        h, w = mask.shape[-2:]
        # Label on a grid 4x coarser (16x fewer pixels, 4x fewer iterations), then
        # carry the labels back to full resolution inside the full-resolution mask.
        coarse = F.max_pool2d(mask, CELL, stride=CELL, ceil_mode=True)
        ch, cw = coarse.shape[-2:]
        index = torch.arange(1, ch * cw + 1, dtype=mask.dtype, device=x.device).view(1, 1, ch, cw)
        labels = index * coarse
        if self.stop_early:
            for i in range(self.max_iterations):
                grown = F.max_pool2d(labels, 3, stride=1, padding=1) * coarse
                if i % 4 == 3 and torch.equal(grown, labels):
                    break
                labels = grown
        else:
            for _ in range(min(self.max_iterations, ch + cw)):
                labels = F.max_pool2d(labels, 3, stride=1, padding=1) * coarse
        full = labels.repeat_interleave(CELL, dim=2).repeat_interleave(CELL, dim=3)[..., :h, :w]
        return scores, full * mask


class ColourBoxYolo(nn.Module):
    """The exportable detector: frames in, raw ``yolo``-format candidates out.

    ``(B, 3, H, W)`` in 0..1 -> ``(B, 2 * cells, 4 + K)``: one candidate row per class
    channel and coarse cell (``cells`` = ``coarse_cells(H, W)`` multiplied), boxes as
    ``cx, cy, w, h`` in input pixels, then ``K = max(class_ids) + 1`` score columns of
    which only ``class_ids[channel]`` is non-zero. See the module docstring.
    """

    def __init__(
        self,
        *,
        class_ids: tuple[int, int] = (CAR, TRUCK),
        min_area_px: int = 12,
        max_iterations: int = 256,
    ) -> None:
        super().__init__()
        if len(class_ids) != 2 or min(class_ids) < 0:
            raise ValueError(f"class_ids must be two non-negative ids, got {class_ids}")
        self.net = ColourBoxNet(
            min_area_px=min_area_px, max_iterations=max_iterations, stop_early=False
        )
        columns = max(class_ids) + 1
        placement = torch.zeros(2, columns)
        for channel, class_id in enumerate(class_ids):
            placement[channel, class_id] = 1.0
        self.placement: torch.Tensor
        self.register_buffer("placement", placement, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores, labels = self.net(x)
        b, c, h, w = labels.shape
        ch, cw = coarse_cells(h, w)
        slots = ch * cw + 1  # label 0 is "no object"; labels are cell indices 1..ch*cw
        index = labels.flatten(2).long()
        on = (index > 0).float()
        size = (b, c, h * w)
        ys = torch.arange(h, device=x.device).repeat_interleave(w).view(1, 1, -1).expand(size)
        xs = torch.arange(w, device=x.device).repeat(h).view(1, 1, -1).expand(size)
        empty = labels.new_zeros((b, c, slots))
        count = empty.scatter_add(2, index, on)
        total = empty.scatter_add(2, index, scores.flatten(2) * on)
        coords = torch.full((b, c, slots), max(h, w), dtype=torch.long, device=x.device)
        x1 = coords.scatter_reduce(2, index, xs, "amin")
        y1 = coords.scatter_reduce(2, index, ys, "amin")
        x2 = torch.zeros_like(coords).scatter_reduce(2, index, xs, "amax") + 1
        y2 = torch.zeros_like(coords).scatter_reduce(2, index, ys, "amax") + 1
        # Slot 0 gathered the background pixels: drop it.
        count, total = count[..., 1:], total[..., 1:]
        x1, y1, x2, y2 = (v[..., 1:].float() for v in (x1, y1, x2, y2))
        keep = (count >= self.net.min_area_px).float()
        score = total / count.clamp(min=1.0) * keep
        boxes = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)
        boxes = boxes * keep.unsqueeze(-1)
        classes = score.unsqueeze(-1) * self.placement.view(1, c, 1, -1)
        return torch.cat([boxes, classes], dim=-1).reshape(b, c * (slots - 1), -1)


class ColourBoxDetector:
    """``BatchExecutor`` around :class:`ColourBoxNet` (CPU, float32)."""

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (3, 96, 160),
        *,
        max_batch_size: int = 16,
        class_ids: tuple[int, int] = (CAR, TRUCK),
    ) -> None:
        self.net = ColourBoxNet().eval()
        self._input_shape = input_shape
        self._max_batch_size = max_batch_size
        self._class_ids = class_ids
        self.frames_run = 0

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self._input_shape

    @property
    def pipeline_depth(self) -> int:
        return 1  # CPU: stage and run one batch at a time

    def stage(self, frames: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(frames))

    def run_batch(self, batch: torch.Tensor) -> list[Detections]:
        with torch.inference_mode():
            scores, labels = self.net(batch)
        self.frames_run += int(batch.shape[0])
        return [self._boxes(scores[i], labels[i]) for i in range(batch.shape[0])]

    def _boxes(self, scores: torch.Tensor, labels: torch.Tensor) -> Detections:
        c, h, w = labels.shape
        flat = labels.reshape(c, -1)
        ys = torch.arange(h).repeat_interleave(w)
        xs = torch.arange(w).repeat(h)
        boxes: list[list[float]] = []
        confidences: list[float] = []
        classes: list[int] = []
        for ch in range(c):
            on = flat[ch] > 0
            if not bool(on.any()):
                continue
            ids, inverse, counts = torch.unique(
                flat[ch][on], return_inverse=True, return_counts=True
            )
            n = len(ids)
            px, py = xs[on], ys[on]
            x1 = torch.full((n,), w, dtype=torch.long).scatter_reduce(0, inverse, px, "amin")
            y1 = torch.full((n,), h, dtype=torch.long).scatter_reduce(0, inverse, py, "amin")
            x2 = torch.zeros(n, dtype=torch.long).scatter_reduce(0, inverse, px, "amax")
            y2 = torch.zeros(n, dtype=torch.long).scatter_reduce(0, inverse, py, "amax")
            total = torch.zeros(n).scatter_add(0, inverse, scores[ch].reshape(-1)[on])
            mean = total / counts
            for k in range(n):
                if int(counts[k]) < self.net.min_area_px:
                    continue
                boxes.append(
                    [
                        float(x1[k]) / w,
                        float(y1[k]) / h,
                        float(x2[k] + 1) / w,
                        float(y2[k] + 1) / h,
                    ]
                )
                confidences.append(float(mean[k]))
                classes.append(self._class_ids[ch])
        if not boxes:
            return Detections()
        return Detections(
            boxes=np.asarray(boxes, dtype=np.float32),
            scores=np.asarray(confidences, dtype=np.float32),
            classes=np.asarray(classes, dtype=np.int64),
        )


def model_config(
    path: str | pathlib.Path,
    input_shape: Sequence[int] = (3, 96, 160),
    max_batch_size: int = 8,
    **kw: object,
) -> config.ModelConfig:
    """The ``model`` section that serves a file of :func:`export_synth_detector`.

    Extra keyword arguments (``backend``, ``batching``, ...) are passed on.
    """
    opt = min(4, max_batch_size)
    fields: dict[str, object] = {
        "path": str(path),
        "format": config.ModelFormat.EXPORTED_PROGRAM,
        "input_shape": list(input_shape),
        "output_format": config.OutputFormat.YOLO,
        "class_names": list(CLASS_NAMES),
        "precision": config.Precision.FP32,
        "batching": config.BatchingConfig(
            max_batch_size=max_batch_size, opt_batch_size=opt, max_queue_delay_ms=2
        ),
    }
    fields.update(kw)
    return config.ModelConfig.model_validate(fields)


def export_synth_detector(
    path: str | pathlib.Path,
    input_shape: Sequence[int] = (3, 96, 160),
    max_batch_size: int = 8,
) -> pathlib.Path:
    """Write :class:`ColourBoxYolo` as a ``torch.export`` program (``.pt2``).

    The batch dimension is dynamic in 1..``max_batch_size`` (the engine refuses a
    fixed-batch program whose batch is not ``batching.maxBatchSize``).
    """
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or shape[0] != 3:
        raise ValueError(f"input_shape must be (3, height, width), got {list(shape)}")
    if shape[1] < CELL or shape[2] < CELL:
        raise ValueError(f"input_shape height and width must be at least {CELL}: {list(shape)}")
    if not 1 <= max_batch_size <= 256:
        raise ValueError(f"max_batch_size must be in 1..256, got {max_batch_size}")
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return export.save_exported_program(
        ColourBoxYolo(), out, (shape[0], shape[1], shape[2]), max_batch_size
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Export the generated-traffic detector as a torch.export .pt2 file."
    )
    parser.add_argument("--out", type=pathlib.Path, required=True, help="the .pt2 file to write")
    parser.add_argument(
        "--input-shape",
        type=int,
        nargs=3,
        default=[3, 96, 160],
        metavar=("C", "H", "W"),
        help="per-frame input shape (model.inputShape); C must be 3",
    )
    parser.add_argument(
        "--max-batch", type=int, default=8, help="largest batch (batching.maxBatchSize)"
    )
    args = parser.parse_args(argv)
    try:
        path = export_synth_detector(args.out, args.input_shape, args.max_batch)
    except ValueError as exc:
        parser.error(str(exc))
    print(path)


if __name__ == "__main__":
    main()
