"""Which decoder a camera connection uses, and why: the record every report shows.

Decided per connection by :mod:`.decode` (and revised by :mod:`.convert` when NVDEC
turns out not to deliver device frames after all), kept by the camera's
:class:`~.stats.CameraStats`, shown in its ``stream`` snapshot, in ``/ready`` and as the
``its_camera_decode_info`` metric. Plain values only, so the statistics and the
readiness body need neither PyAV nor torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

#: The two decode paths: FFmpeg in software + swscale, or NVDEC + torch on the device.
Backend = Literal["cpu", "gpu"]
CPU: Backend = "cpu"
GPU: Backend = "gpu"


@dataclass(frozen=True, slots=True)
class DecodeDecision:
    #: ``cameraDecode`` as configured: ``auto``, ``cpu`` or ``gpu``.
    requested: str
    #: The path this connection's frames take.
    backend: Backend
    #: Why: the cause of a CPU fallback, or what runs on the GPU.
    reason: str

    @property
    def fell_back(self) -> bool:
        """True when the GPU was asked for (``gpu``) but the CPU decodes."""
        return self.requested == "gpu" and self.backend == CPU

    def to_json(self) -> dict[str, str]:
        return {"requested": self.requested, "backend": self.backend, "reason": self.reason}


def summary(requested: str, cameras: Mapping[str, DecodeDecision | None]) -> dict[str, Any]:
    """``/ready``'s ``camera_decode``: the mode asked for, how many cameras decode where,
    and each camera's decision (None before its first connection)."""
    backends = [d.backend for d in cameras.values() if d is not None]
    return {
        "requested": requested,
        "gpu": backends.count(GPU),
        "cpu": backends.count(CPU),
        "cameras": {n: None if d is None else d.to_json() for n, d in sorted(cameras.items())},
    }
