"""GPU memory as configured, batch buffers allocated once, and memory numbers out.

* The caching allocator reads its settings (``expandable_segments``,
  ``max_split_size_mb``) from an environment variable when CUDA initialises, so they
  are written into the environment before the first CUDA call; values the operator or
  user already set there win. If CUDA is already up they are applied through the
  allocator's runtime setter, best effort, and that is logged.
* A per-process memory fraction caps this process on a shared GPU.
* ``BatchStager`` is the one owner of batch memory (the batcher is a CPU-only
  scheduler and allocates none). It owns one pinned host buffer and one device buffer
  of the largest batch, allocated once: a batch is copied into the pinned buffer, then
  sent with a non-blocking copy, so steady-state serving allocates nothing per batch
  (no allocator churn, no fragmentation) and padding rows to a bucket is free. On CPU
  it only pads into a reused buffer (and passes batches that need no padding through
  untouched); a lone CPU frame is passed on as a one-frame view of itself, no copy.
* ``BatchStager.collate`` is the engine's half of the batcher's ``stage`` step: it
  stacks the frames of the next batch into one of ``slots`` reused buffers. On CUDA
  there are two slots: the frames go into pinned memory and are copied to the device
  on a side stream, in the batcher's staging thread, while the previous batch computes;
  ``stage`` then makes the compute stream wait on that copy's event. Slots are used in
  turn, which is safe because the batcher keeps at most ``slots`` batches staged or
  running and runs them in the order they were staged.

Every CUDA call sits behind ``device.type == "cuda"``, so the CPU path never touches
CUDA.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from its_runtime import config
from its_runtime.engine import spec as spec_mod

log = logging.getLogger(__name__)

_ALLOC_ENV = ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF")
#: Untyped in torch's stubs; a typed alias keeps strict mypy content.
cuda_initialized: Callable[[], bool] = torch.cuda.is_initialized


def allocator_settings(gpu: config.GpuConfig) -> dict[str, str]:
    settings = {"expandable_segments": "True" if gpu.expandable_segments else "False"}
    if gpu.max_split_size_mb is not None:
        settings["max_split_size_mb"] = str(gpu.max_split_size_mb)
    return settings


def configure_allocator(gpu: config.GpuConfig) -> None:
    """Put the allocator settings where CUDA will read them (before it initialises)."""
    wanted = allocator_settings(gpu)
    env_name = next((n for n in _ALLOC_ENV if os.environ.get(n)), "PYTORCH_CUDA_ALLOC_CONF")
    current = os.environ.get(env_name, "")
    present = {item.split(":", 1)[0].strip() for item in current.split(",") if ":" in item}
    added = [f"{k}:{v}" for k, v in wanted.items() if k not in present]
    if not added:
        return
    merged = ",".join(filter(None, [current, *added]))
    if cuda_initialized():
        try:
            torch.cuda.memory._set_allocator_settings(",".join(added))
            log.info("CUDA already initialised; applied allocator settings %s at runtime", added)
        except Exception as exc:  # a setting this version cannot change at runtime
            log.warning(
                "CUDA already initialised; allocator settings %s not applied: %s", added, exc
            )
        return
    os.environ[env_name] = merged
    log.info("CUDA allocator settings: %s=%s", env_name, merged)


def apply_memory_fraction(gpu: config.GpuConfig, device: torch.device) -> None:
    if device.type == "cuda" and gpu.memory_fraction is not None:
        torch.cuda.set_per_process_memory_fraction(gpu.memory_fraction, device)
        log.info("CUDA memory fraction for this process: %.2f", gpu.memory_fraction)


def memory_stats(device: torch.device) -> dict[str, int]:
    """Allocated, reserved and peak bytes on a CUDA device; empty on CPU."""
    if device.type != "cuda":
        return {}
    return {
        "allocated_bytes": torch.cuda.memory_allocated(device),
        "reserved_bytes": torch.cuda.memory_reserved(device),
        "peak_allocated_bytes": torch.cuda.max_memory_allocated(device),
        "peak_reserved_bytes": torch.cuda.max_memory_reserved(device),
    }


class BatchStager:
    """Moves a CPU batch to the engine's device, padded to a batch size, via reused buffers."""

    def __init__(
        self,
        spec: spec_mod.InputSpec,
        device: torch.device,
        dtype: torch.dtype,
        channels_last: bool = False,
    ) -> None:
        self.device = device
        self.dtype = dtype
        shape = (spec.max_batch, *spec.frame_shape)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self._host: torch.Tensor | None = None
        if device.type == "cuda":
            self._host = torch.zeros(shape, dtype=spec.dtype, pin_memory=True)
            self._device_buf = torch.zeros(shape, dtype=dtype, device=device).to(memory_format=fmt)
        else:
            self._device_buf = torch.zeros(shape, dtype=dtype).to(memory_format=fmt)
        self._channels_last = channels_last
        self._spec = spec
        #: Batches staged or running at once (see the module docstring).
        self.slots = 2 if device.type == "cuda" else 1
        self._next_slot = 0
        self._slot_host: list[torch.Tensor] = []  # pinned on CUDA; allocated on first use
        self._slot_device: list[torch.Tensor] = []  # CUDA only
        self._copy_stream: Any = None  # torch.cuda.Stream, created on first use
        self._ready: dict[int, Any] = {}  # device slot address -> torch.cuda.Event

    def collate(self, frames: Sequence[torch.Tensor]) -> torch.Tensor:
        """Stack ``frames`` (each ``(C, H, W)``) into the next slot's buffer.

        Returns the ``(n, C, H, W)`` batch for :meth:`stage`: on the CPU, or on CUDA
        already being copied to the device on the side stream. Frames may already be
        on the device (cameras decoded by NVDEC): those are stacked device to device on
        the side stream, which first waits for the device's default stream (where they
        were produced), so they never make a host round trip; host frames go through
        the pinned buffer as before, and a batch may mix both. The side stream is
        recorded on every device frame, so the allocator does not hand its memory out
        again before the stack has read it. An engine on the CPU copies device frames
        to the host (the one case a host copy is unavoidable).
        """
        n = len(frames)
        if not 1 <= n <= self._spec.max_batch:
            raise ValueError(f"batch of {n} frames is outside 1..{self._spec.max_batch}")
        slot = self._next_slot
        self._next_slot = (slot + 1) % self.slots
        cuda = self.device.type == "cuda"
        shape = (self._spec.max_batch, *self._spec.frame_shape)
        on_device = [cuda and f.device == self.device for f in frames]
        if not all(on_device):
            while len(self._slot_host) <= slot:
                self._slot_host.append(torch.empty(shape, dtype=self._spec.dtype, pin_memory=cuda))
        if not cuda:
            lone = frames[0]
            if (
                n == 1
                and lone.device.type == "cpu"
                and lone.dtype == self._spec.dtype
                and lone.is_contiguous()
            ):
                # A lone frame is already a batch: a view, not a copy (no batching tax).
                return lone.unsqueeze(0)
            host = self._slot_host[slot][:n]
            torch.stack([f.cpu() if f.is_cuda else f for f in frames], out=host)
            return host
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(device=self.device)  # type: ignore[no-untyped-call]
        while len(self._slot_device) <= slot:
            self._slot_device.append(torch.empty(shape, dtype=self._spec.dtype, device=self.device))
        dev = self._slot_device[slot][:n]
        if not any(on_device):
            host = self._slot_host[slot][:n]
            torch.stack([f.cpu() if f.is_cuda else f for f in frames], out=host)
        with torch.cuda.stream(self._copy_stream):
            if not any(on_device):
                dev.copy_(host, non_blocking=True)
            else:
                self._copy_stream.wait_stream(torch.cuda.default_stream(self.device))
                if all(on_device):
                    torch.stack(list(frames), out=dev)
                else:
                    host_rows = self._slot_host[slot]
                    for i, (frame, here) in enumerate(zip(frames, on_device, strict=True)):
                        if here:
                            dev[i].copy_(frame)
                        else:
                            host_rows[i].copy_(frame.cpu() if frame.is_cuda else frame)
                            dev[i].copy_(host_rows[i], non_blocking=True)
                for frame, here in zip(frames, on_device, strict=True):
                    if here:
                        frame.record_stream(self._copy_stream)
            ready = torch.cuda.Event()  # type: ignore[no-untyped-call]
            ready.record(self._copy_stream)
        self._ready[dev.data_ptr()] = ready
        return dev

    def stage(self, batch: torch.Tensor, size: int) -> torch.Tensor:
        """``batch`` (n <= size frames) as a ``size``-frame tensor on the device.

        ``batch`` may be on CPU, or on the device from :meth:`collate` (then the
        current stream first waits for its copy).
        """
        n = batch.shape[0]
        ready = self._ready.pop(batch.data_ptr(), None) if batch.is_cuda else None
        if ready is not None:
            torch.cuda.current_stream(self.device).wait_event(ready)
        if batch.device == self.device or self.device.type != "cuda":
            if n == size and batch.dtype == self.dtype and not self._channels_last:
                return batch if batch.is_contiguous() else batch.contiguous()
            out = self._device_buf[:size]
            out[:n].copy_(batch)
            return out
        assert self._host is not None
        self._host[:n].copy_(batch)
        out = self._device_buf[:size]
        # Safe to reuse the pinned buffer next batch: run_batch synchronises (its outputs
        # are copied back to the CPU) before the next stage() call.
        out[:n].copy_(self._host[:n], non_blocking=True)
        return out
