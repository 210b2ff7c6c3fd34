"""GPU telemetry through NVML, imported lazily and optional by design.

The runtime must start and serve on machines without a GPU, without the NVML library
or without the ``nvidia-ml-py`` package: any of those makes telemetry *unavailable*
(logged once, with the cause), never an error. NVML reads device-wide utilisation,
memory and temperature (what DCGM exporters publish), which the caching allocator's
per-process numbers from the engine do not show. ``pynvml`` is imported only in
:meth:`GpuTelemetry.start`, so importing this module costs nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class GpuReading:
    """One device's readings at one moment (satisfies ``collectors.GpuSample``)."""

    index: int
    name: str
    utilization: float  # 0..1
    memory_used_bytes: int
    memory_total_bytes: int
    temperature_celsius: float


class GpuTelemetry:
    """NVML handles for every visible GPU, or nothing (``available`` False) with a reason."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[tuple[int, str, Any]] = []
        self._lock = threading.Lock()
        self.unavailable_reason: str | None = "not started"

    @property
    def available(self) -> bool:
        return self._nvml is not None and bool(self._handles)

    def start(self) -> GpuTelemetry:
        """Initialise NVML if it can be; log once why not otherwise. Returns self."""
        try:
            import pynvml
        except ImportError:
            return self._unavailable("the nvidia-ml-py package is not installed")
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            return self._unavailable(f"NVML did not initialise: {exc}")
        try:
            handles = []
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                name = pynvml.nvmlDeviceGetName(handle)
                handles.append(
                    (index, name.decode() if isinstance(name, bytes) else str(name), handle)
                )
        except pynvml.NVMLError as exc:
            pynvml.nvmlShutdown()
            return self._unavailable(f"NVML could not list devices: {exc}")
        if not handles:
            pynvml.nvmlShutdown()
            return self._unavailable("NVML sees no GPU")
        self._nvml, self._handles, self.unavailable_reason = pynvml, handles, None
        log.info("GPU telemetry: %s", ", ".join(f"{i}: {n}" for i, n, _ in handles))
        return self

    def _unavailable(self, reason: str) -> GpuTelemetry:
        self.unavailable_reason = reason
        log.info("GPU telemetry unavailable: %s", reason)
        return self

    def sample(self) -> list[GpuReading]:
        """Current readings; a device that fails to answer is left out (logged at debug)."""
        if not self.available:
            return []
        nvml = self._nvml
        out = []
        with self._lock:
            for index, name, handle in self._handles:
                try:
                    util = nvml.nvmlDeviceGetUtilizationRates(handle)
                    mem = nvml.nvmlDeviceGetMemoryInfo(handle)
                    temp = nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
                except nvml.NVMLError as exc:
                    log.debug("NVML read of GPU %d failed: %s", index, exc)
                    continue
                out.append(
                    GpuReading(
                        index=index,
                        name=name,
                        utilization=float(util.gpu) / 100.0,
                        memory_used_bytes=int(mem.used),
                        memory_total_bytes=int(mem.total),
                        temperature_celsius=float(temp),
                    )
                )
        return out

    def utilization(self) -> float | None:
        """Mean utilisation (0..1) over the visible GPUs, or None without telemetry."""
        readings = self.sample()
        if not readings:
            return None
        return sum(r.utilization for r in readings) / len(readings)

    def close(self) -> None:
        if self._nvml is not None:
            with self._lock:
                try:
                    self._nvml.nvmlShutdown()
                except self._nvml.NVMLError as exc:
                    log.debug("nvmlShutdown failed: %s", exc)
                self._nvml, self._handles = None, []
                self.unavailable_reason = "closed"
