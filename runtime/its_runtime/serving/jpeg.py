"""nvJPEG: HTTP JPEG bodies decoded straight onto the engine's CUDA device.

With ``server.jpegDecode`` ``gpu`` or ``auto`` and an engine on a CUDA device, a JPEG
body is decoded by ``torchvision.io.decode_jpeg(..., device=cuda)`` (nvJPEG; the
hardware JPEG engine on A100/H100-class GPUs) and fitted to the model input on the
device, so the frame handed to the batcher is already there. Per frame:

1. the header is read on the CPU (PIL reads the markers only): a 3-component JPEG
   that ends with its EOI marker and is within the pixel limit goes on; anything else
   (PNG, greyscale or CMYK JPEGs, truncated or garbage bytes) is left to the PIL path
   (:mod:`.preprocess`), which decodes it or names what is wrong (HTTP 400);
2. the compressed bytes are copied once into a CPU tensor; nvJPEG uploads and decodes
   them (a request's frames in one batched call) into ``(3, H, W)`` uint8 on the device;
3. on the device, on this thread's own stream: to float, bilinear resize to the
   :class:`~its_runtime.letterbox.Fit`'s scaled size (no antialiasing), placed on a
   grey (114) canvas for letterbox, divided by 255: ``(3, H, W)`` float32 in 0..1;
4. the thread waits for its stream, so the tensor is complete when the batcher gets it.

A frame nvJPEG fails on is decoded by PIL instead (counted in
``its_jpeg_gpu_fallbacks_total``), so corrupt data is a 400 on either path, never a 500.
:func:`resolve` says which decoder is active and why; a self-test decode of a tiny JPEG
runs once per device before nvJPEG is trusted.
"""

from __future__ import annotations

import dataclasses
import io
import threading
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image

from its_runtime.letterbox import PAD_VALUE, Fit

#: Bilinear without antialiasing: one cheap kernel; fine for the 2-3x reductions of
#: camera frames to detector inputs.
ANTIALIAS = False
_SOI = b"\xff\xd8\xff"
_EOI = b"\xff\xd9"

_self_tests: dict[str, str | None] = {}
_self_test_lock = threading.Lock()
_local = threading.local()


@dataclasses.dataclass(frozen=True, slots=True)
class JpegDecodeStatus:
    """Which JPEG decoder HTTP frames use: ``requested`` (auto|cpu|gpu), ``active``
    (gpu|cpu), the ``reason``, and the CUDA ``device`` when active is gpu."""

    requested: str
    active: str
    reason: str
    device: str | None = None

    @property
    def gpu(self) -> bool:
        return self.active == "gpu"

    def as_dict(self) -> dict[str, str | None]:
        return dataclasses.asdict(self)


def resolve(requested: str, engine_device: torch.device | None, channels: int) -> JpegDecodeStatus:
    """The decoder for ``requested``, given the engine's device (None while it loads)."""
    if requested == "cpu":
        return JpegDecodeStatus(requested, "cpu", "server.jpegDecode is cpu")
    asked = "gpu requested, but " if requested == "gpu" else ""
    if not torch.cuda.is_available():
        return JpegDecodeStatus(requested, "cpu", f"{asked}CUDA is not available")
    if channels != 3:
        return JpegDecodeStatus(requested, "cpu", f"{asked}the model takes {channels} channel(s)")
    if engine_device is None:
        return JpegDecodeStatus(requested, "cpu", f"{asked}the engine has not loaded yet")
    if engine_device.type != "cuda":
        return JpegDecodeStatus(requested, "cpu", f"{asked}the engine runs on {engine_device}")
    problem = self_test(engine_device)
    if problem is not None:
        return JpegDecodeStatus(requested, "cpu", f"{asked}nvJPEG failed its self-test: {problem}")
    return JpegDecodeStatus(requested, "gpu", f"nvJPEG on {engine_device}", str(engine_device))


def self_test(device: torch.device) -> str | None:
    """None when nvJPEG decodes a tiny JPEG on ``device``, else what went wrong (cached)."""
    key = str(device)
    with _self_test_lock:
        if key not in _self_tests:
            buf = io.BytesIO()
            Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, "JPEG")
            try:
                (img,) = _decode_jpeg([_encoded(buf.getvalue())], device)
                torch.cuda.synchronize(device)
                ok = tuple(img.shape) == (3, 16, 16) and img.device.type == "cuda"
                _self_tests[key] = None if ok else f"unexpected output {tuple(img.shape)}"
            except Exception as exc:
                _self_tests[key] = f"{type(exc).__name__}: {exc}"
        return _self_tests[key]


def header(data: bytes, max_pixels: int) -> tuple[int, int] | None:
    """``(width, height)`` of a JPEG nvJPEG should take; None to leave it to PIL."""
    if not data.startswith(_SOI) or not data.rstrip(b"\x00").endswith(_EOI):
        return None
    try:
        img = Image.open(io.BytesIO(data), formats=("JPEG",))
    except Exception:
        return None
    if img.mode != "RGB" or img.width * img.height > max_pixels:
        return None
    return img.width, img.height


def decode(
    datas: Sequence[bytes], fits: Sequence[Fit], device: torch.device
) -> list[torch.Tensor | None]:
    """Decode JPEGs with nvJPEG and fit them: per frame a ``(3, H, W)`` float32 tensor on
    ``device``, or None where nvJPEG failed (the caller decodes that one on the CPU)."""
    try:
        stream = _stream(device)
        out: list[torch.Tensor | None] = []
        with torch.cuda.stream(stream):
            images = _decode_all([_encoded(d) for d in datas], device)
            for img, fit in zip(images, fits, strict=True):
                if img is None or tuple(img.shape[1:]) != (fit.src_h, fit.src_w):
                    out.append(None)
                    continue
                try:
                    out.append(fit_image(img, fit))
                except Exception:  # e.g. out of device memory: the CPU path still works
                    out.append(None)
        stream.synchronize()
    except Exception:  # a CUDA error outside nvJPEG: every frame goes to the CPU path
        return [None] * len(datas)
    return out


def fit_image(img: torch.Tensor, fit: Fit) -> torch.Tensor:
    """``(3, src_h, src_w)`` uint8 -> ``(3, dst_h, dst_w)`` float32 in 0..1, on its device.

    The arithmetic matches the CPU path: values in 0..255 are resized, placed on a
    PAD_VALUE canvas and divided by 255 last.
    """
    x = img.unsqueeze(0).to(torch.float32)
    if (fit.scaled_h, fit.scaled_w) != tuple(img.shape[1:]):
        x = F.interpolate(
            x,
            size=(fit.scaled_h, fit.scaled_w),
            mode="bilinear",
            align_corners=False,
            antialias=ANTIALIAS,
        )
    if fit.identity:
        return x[0].div_(255.0)
    canvas = torch.full(
        (img.shape[0], fit.dst_h, fit.dst_w), float(PAD_VALUE), dtype=torch.float32, device=x.device
    )
    canvas[:, fit.pad_y : fit.pad_y + fit.scaled_h, fit.pad_x : fit.pad_x + fit.scaled_w] = x[0]
    return canvas.div_(255.0)


def _encoded(data: bytes) -> torch.Tensor:
    # bytearray: one copy of the compressed bytes into memory torch may own (the
    # request body is immutable, and frombuffer warns about read-only buffers).
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _decode_jpeg(encoded: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    import torchvision.io

    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its image codecs in favour of TorchCodec.
        warnings.simplefilter("ignore", DeprecationWarning)
        out = torchvision.io.decode_jpeg(
            encoded, mode=torchvision.io.ImageReadMode.RGB, device=device
        )
    return list(out)


def _decode_all(encoded: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """One batched nvJPEG call; if it fails, frame by frame so one bad frame spoils none."""
    try:
        return list(_decode_jpeg(encoded, device))
    except Exception:
        if len(encoded) == 1:
            return [None]
    out: list[torch.Tensor | None] = []
    for one in encoded:
        try:
            out.extend(_decode_jpeg([one], device))
        except Exception:
            out.append(None)
    return out


def _stream(device: torch.device) -> torch.cuda.Stream:
    """This thread's decode stream on ``device``: decoding never waits for the engine."""
    streams: dict[str, torch.cuda.Stream] = getattr(_local, "streams", None) or {}
    _local.streams = streams
    key = str(device)
    if key not in streams:
        streams[key] = torch.cuda.Stream(device=device)  # type: ignore[no-untyped-call]
    return streams[key]
