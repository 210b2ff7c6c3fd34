"""Decode a clip the way a camera connection does, as fast as it goes (benchmarks/gpu.py).

``decode_all(clip, mode, input_shape)`` opens the clip through the runtime's own
decoder choice (:func:`its_runtime.dataplane.ingest.decode.open_camera`: NVDEC with
frames kept on the device for ``gpu``, FFmpeg threads on the CPU for ``cpu``) and
converts every frame to the model input with the runtime's
:class:`~its_runtime.dataplane.ingest.convert.FrameConverter` (swscale on the host, or
NV12 -> RGB, resize and padding in torch on the device). No pacing, no model: this is
the decode stage's own ceiling.
"""

from __future__ import annotations

import pathlib

import torch

from its_runtime.dataplane.ingest import convert, decode


def decode_all(clip: pathlib.Path, mode: str, input_shape: tuple[int, int, int]) -> tuple[int, str]:
    """Frames decoded and converted, and the backend that did it (``cpu``/``gpu``)."""
    url = clip.resolve().as_uri()
    container, decision = decode.open_camera(
        url,
        requested=mode,
        device_frames=lambda: torch.cuda.is_available(),
        open_timeout_s=10.0,
        read_timeout_s=10.0,
    )
    changes: list[str] = []
    converter = convert.FrameConverter(
        (input_shape[2], input_shape[1]), "stretch", decision, lambda d: changes.append(d.backend)
    )
    n = 0
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            converter.convert(frame)
            n += 1
    finally:
        container.close()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return n, converter.decision.backend
