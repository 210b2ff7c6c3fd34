"""CUDA graphs around a backend's forward: one captured graph per batch bucket.

A small detector at small batches on a big GPU spends much of its forward launching
kernels from Python (hundreds of launches of microseconds each). A CUDA graph records
those launches once and replays them with one call, which is what makes batch 1..4
cheap on an H100/H200. The rules that make it safe:

* **Fixed shapes.** A graph replays exactly what it captured, so it is used only with
  bucket-sized batches (the runner then pads to buckets, as torch.compile does).
* **Static buffers.** Each bucket's graph reads one input tensor and writes the same
  output tensors on every replay. The engine copies a staged batch into the graph's
  input (a device-to-device copy) and reads the outputs before the next replay:
  ``run_batch`` turns them into host ``Detections`` before it returns, and it is called
  from one thread, so no replay overwrites outputs still being read.
* **Captured at warm-up**, after a few eager iterations on a side stream (what
  ``torch.cuda.graphs`` asks for), so a pod is ready only once every bucket replays.
* **Falls back per bucket.** A forward that cannot be captured (host synchronisation,
  data-dependent shapes, a CPU op) raises during capture; that bucket then runs the
  plain forward and the cause is recorded in the engine's fallbacks.

On the CPU this module is never used (``GpuConfig.cudaGraphs`` only applies on CUDA).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from its_runtime.engine.runner import Runner

log = logging.getLogger(__name__)

#: Eager iterations on a side stream before capture (lazy init, cuDNN autotuning).
WARMUP_ITERATIONS = 3


class GraphedForward:
    """A forward function that replays a captured CUDA graph per input shape."""

    def __init__(self, forward: Callable[[torch.Tensor], Any], device: torch.device) -> None:
        self._forward = forward
        self._device = device
        self._graphs: dict[tuple[int, ...], tuple[Any, torch.Tensor, Any]] = {}
        self._uncapturable: dict[tuple[int, ...], str] = {}
        self._pool: Any = None

    @property
    def failures(self) -> dict[tuple[int, ...], str]:
        """Shapes that run without a graph, and why."""
        return dict(self._uncapturable)

    @property
    def captured(self) -> list[tuple[int, ...]]:
        return sorted(self._graphs)

    def __call__(self, x: torch.Tensor) -> Any:
        key = tuple(x.shape)
        if key in self._uncapturable:
            return self._forward(x)
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(x)
            if entry is None:
                return self._forward(x)
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        return static_out

    def _capture(self, x: torch.Tensor) -> tuple[Any, torch.Tensor, Any] | None:
        key = tuple(x.shape)
        static_in = x.detach().clone()
        try:
            side = torch.cuda.Stream(device=self._device)  # type: ignore[no-untyped-call]
            side.wait_stream(torch.cuda.current_stream(self._device))
            with torch.cuda.stream(side):
                for _ in range(WARMUP_ITERATIONS):
                    self._forward(static_in)
            torch.cuda.current_stream(self._device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            with torch.cuda.graph(graph, pool=self._pool):
                static_out = self._forward(static_in)
        except Exception as exc:  # capture is best effort; the plain forward still works
            cause = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            self._uncapturable[key] = cause[:300]
            log.warning("CUDA graph capture failed for batch shape %s: %s", key, cause)
            torch.cuda.synchronize(self._device)
            return None
        self._graphs[key] = (graph, static_in, static_out)
        return self._graphs[key]


def wrap(runner: Runner, device: torch.device) -> tuple[Runner, GraphedForward | None]:
    """``runner`` with its forward replayed from CUDA graphs (CUDA only; else unchanged)."""
    if device.type != "cuda":
        return runner, None
    graphed = GraphedForward(runner.forward, device)
    return replace(runner, forward=graphed, pads_to_buckets=True), graphed
