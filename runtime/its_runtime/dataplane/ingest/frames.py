"""The decoded frame that ingestion hands to the pipeline.

A frame carries two clocks on purpose: ``media_time`` is the stream's own timeline
(what ground truth and speed estimates are written in), ``decoded_at`` is wall-clock
time (what database rows and interval counts are stamped with, so counts line up
across cameras). ``decoded_mono`` measures lags without wall-clock jumps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


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
    #: (H, W, 3) RGB at the analysis size.
    image: npt.NDArray[np.uint8]
    #: Size of the stream itself, in pixels (speed calibration is in source pixels).
    source_width: int
    source_height: int
