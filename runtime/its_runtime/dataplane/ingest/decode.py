"""Where a camera connection decodes: NVDEC on the GPU, or FFmpeg on the CPU.

``cameraDecode`` asks (``auto``, ``cpu`` or ``gpu``); this module answers per
connection, with a :class:`~.decision.DecodeDecision` that says why. The GPU is used
only when every link of the chain holds, checked in this order (the first that fails
is the reason shown):

1. the mode is not ``cpu``;
2. torch has CUDA (``torch.cuda.is_available()``);
3. whoever takes the frames takes CUDA tensors (the engine runs on CUDA; a CPU
   executor, such as the test kits' detector, does not);
4. the loaded FFmpeg was built with the CUDA hwaccel (``hwdevices_available()``);
5. FFmpeg can create a CUDA device (``av_hwdevice_ctx_create``: fails without a driver,
   or where the GPU, say a MIG slice, has no NVDEC); probed once per process and
   device, with a decoder that certainly has a CUDA config (H.264);
6. the container opens with the hwaccel, and the stream's codec has an NVDEC config
   (``codec_context.is_hwaccel``; MJPEG streams, for one, may not).

A later frame can still revise the answer (:mod:`.convert`): FFmpeg's software
fallback (``allow_software_fallback``) decodes a stream NVDEC refuses (an unsupported
profile or size), and those frames go the CPU way. Whatever fails, the camera keeps
decoding on the CPU: a failed GPU open is retried at once without the hwaccel. ``gpu``
differs from ``auto`` only in that a fallback is a warning.

The hwaccel keeps frames on the device (``is_hw_owned``, which also makes FFmpeg use
the CUDA primary context, the one torch uses), so :mod:`.convert` can wrap them with
DLPack instead of downloading them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import av
import av.codec.hwaccel
import av.container
import torch

from its_runtime.dataplane.ingest import source
from its_runtime.dataplane.ingest.decision import CPU, GPU, DecodeDecision

#: The CUDA device NVDEC decodes on (the engine's; the runtime uses one GPU per pod).
DEVICE_INDEX = 0


def hwaccel(device_index: int = DEVICE_INDEX) -> av.codec.hwaccel.HWAccel:
    """PyAV's CUDA hwaccel settings: NVDEC, frames kept on the device."""
    return av.codec.hwaccel.HWAccel(
        device_type="cuda",
        device=str(device_index),
        allow_software_fallback=True,
        is_hw_owned=True,
    )


@functools.cache
def cuda_device_error(device_index: int = DEVICE_INDEX) -> str | None:
    """Why FFmpeg cannot create a CUDA device here (None: it can). Cached per process."""
    try:
        hwaccel(device_index).create(av.codec.Codec("h264", "r"))
    except Exception as exc:
        return describe(exc)
    return None


def gpu_unavailable_reason(requested: str, device_frames: Callable[[], bool] | None) -> str | None:
    """The first link of the chain (module docstring, 1-5) that fails; None when all hold."""
    if requested == "cpu":
        return "cameraDecode is cpu"
    if not torch.cuda.is_available():
        return "CUDA is not available to torch (no GPU or no CUDA driver in this pod)"
    if device_frames is None or not device_frames():
        return "the inference engine does not take CUDA frames (it runs on the CPU)"
    if "cuda" not in av.codec.hwaccel.hwdevices_available():
        return "the FFmpeg that PyAV loads was built without the CUDA hwaccel (no NVDEC)"
    error = cuda_device_error()
    if error is not None:
        return f"FFmpeg cannot create a CUDA device for NVDEC: {error}"
    return None


def open_camera(
    url: str,
    *,
    requested: str,
    device_frames: Callable[[], bool] | None,
    open_timeout_s: float,
    read_timeout_s: float,
) -> tuple[av.container.InputContainer, DecodeDecision]:
    """Open ``url`` for decoding where :func:`gpu_unavailable_reason` and the codec allow.

    Raises what opening raises when the stream cannot be opened at all (the reader
    retries with backoff); a failure that only the GPU open had is a CPU fallback.
    """
    why = gpu_unavailable_reason(requested, device_frames)
    if why is None:
        try:
            container = source.open_container(
                url, open_timeout_s=open_timeout_s, read_timeout_s=read_timeout_s, hwaccel=hwaccel()
            )
        except Exception as exc:
            why = f"opening the stream with NVDEC failed ({describe(exc)})"
        else:
            video = container.streams.video
            if video and video[0].codec_context.is_hwaccel:
                name = video[0].codec_context.name
                return container, DecodeDecision(
                    requested, GPU, f"NVDEC decodes {name}; frames stay on the GPU"
                )
            name = video[0].codec_context.name if video else "the stream"
            # Without a hardware context this container decodes in software: keep it.
            return container, DecodeDecision(
                requested, CPU, f"NVDEC has no decoder for {name} in this FFmpeg build"
            )
    container = source.open_container(
        url, open_timeout_s=open_timeout_s, read_timeout_s=read_timeout_s
    )
    return container, DecodeDecision(requested, CPU, why)


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]
