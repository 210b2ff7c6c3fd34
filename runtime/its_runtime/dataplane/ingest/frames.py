"""The decoded frame that ingestion hands to the pipeline.

A frame carries two clocks on purpose: ``media_time`` is the stream's own timeline
(what ground truth and speed estimates are written in), ``decoded_at`` is wall-clock
time (what database rows and interval counts are stamped with, so counts line up
across cameras). ``decoded_mono`` measures lags without wall-clock jumps.

Pixels are in one of two places (:mod:`.convert`): on the host (``image``, from the
CPU decode path) or on the GPU (``device_image``, from NVDEC; ``image`` is then
empty). Either way they are uint8 RGB at the model's input size, fitted as ``fit``
says, which is how the pipeline maps the boxes back onto the frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from its_runtime.detections import Detections

if TYPE_CHECKING:
    import torch

    from its_runtime.letterbox import Fit


@dataclass(frozen=True, slots=True)
class Frame:
    camera: str
    #: Increases by one per delivered frame, across reconnects.
    seq: int
    #: Which connection of the reader produced it (1 = first; a reconnect adds one).
    connection: int
    #: Seconds on the stream's own clock (presentation time).
    media_time: float
    #: ``time.time()`` when the frame came out of the decoder.
    decoded_at: float
    #: ``time.monotonic()`` at the same moment.
    decoded_mono: float
    #: (H, W, 3) RGB at the analysis size; (0, 0, 3) when ``device_image`` holds the pixels.
    image: npt.NDArray[np.uint8]
    #: Size of the stream itself, in pixels (speed calibration is in source pixels).
    source_width: int
    source_height: int
    #: How the source sits in the analysis size (stretched, or letterboxed with padding).
    fit: Fit | None = None
    #: (3, H, W) uint8 RGB on the GPU (NVDEC decode path), or None.
    device_image: torch.Tensor | None = None

    def to_source(self, detections: Detections) -> Detections:
        """Detections in model-input coordinates -> normalised to this frame.

        Stretch needs nothing; letterboxed boxes lose the padding and the scale, and a
        box that lies wholly in the padding (nothing of the frame in it) is dropped.
        """
        fit = self.fit
        if fit is None or fit.identity or len(detections) == 0:
            return detections
        boxes = fit.boxes_to_source(detections.boxes)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if bool(keep.all()):
            return Detections(boxes, detections.scores, detections.classes)
        return Detections(boxes[keep], detections.scores[keep], detections.classes[keep])
