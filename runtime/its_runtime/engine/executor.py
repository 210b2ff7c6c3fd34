"""The engine the batcher drives: load once, warm every bucket, run batches.

It implements the batcher's executor protocol: ``stage`` collates a batch's frames into
the engine's own buffers (on CUDA on the batcher's staging thread, copying to the
device on a side stream while the previous batch computes) and ``run_batch`` runs it;
each is called from one thread only, so neither needs locks. The batcher owns queueing,
timing and threads and allocates no memory; this class owns the device and every batch
buffer. ``stats()`` returns an :class:`~its_runtime.engine.stats.EngineStats` snapshot
for ``/ready`` and the metrics. Loading follows one path whatever the
model: apply the GPU memory settings (before CUDA initialises), load and check the
model file, probe it once on a zero batch, then pick a backend (``backends.select``)
through the engine cache. ``warmup`` runs every batch bucket once, so compiled
backends have compiled (and CUDA has allocated) before the pod reports ready.

Batch sizes come from the one :class:`~its_runtime.engine.plan.BatchPlan` the batcher
also holds. A batch is staged through buffers allocated once (``staging.BatchStager``),
padded to its bucket where the backend runs fixed shapes, run under ``torch.inference_mode``,
and its outputs turned into ``Detections``; padding rows are dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence

import torch

from its_runtime import config
from its_runtime.detections import Detections
from its_runtime.engine import backends, compiled, graphs, keys, loading, postprocess, staging
from its_runtime.engine import cache as cache_mod
from its_runtime.engine import plan as plan_mod
from its_runtime.engine import spec as spec_mod
from its_runtime.engine import stats as stats_mod
from its_runtime.engine.errors import EngineLoadError
from its_runtime.engine.runner import Runner

log = logging.getLogger(__name__)


def resolve_device(device: str | None) -> torch.device:
    if device is None:
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise EngineLoadError(f"invalid device {device!r}: {exc}") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise EngineLoadError(f"device {device!r} requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu":
        raise EngineLoadError(f"device {device!r} is not supported (use cpu or cuda[:N])")
    return dev


class Engine:
    """A loaded, backend-compiled detector; see the module docstring."""

    def __init__(
        self,
        *,
        model: config.ModelConfig,
        spec: spec_mod.InputSpec,
        plan: plan_mod.BatchPlan,
        device: torch.device,
        runner: Runner,
        fallbacks: list[tuple[str, str]],
        cache_stats: cache_mod.EngineCacheStats,
        load_seconds: float,
    ) -> None:
        self.model = model
        self.spec = spec
        self.device = device
        self.max_batch_size = spec.max_batch
        self.input_shape: tuple[int, int, int] = spec.frame_shape
        #: The batch plan with the sizes this engine really runs (a model exported for
        #: one fixed batch has that one bucket).
        self.plan = dataclasses.replace(plan, buckets=spec.buckets, opt_batch_size=spec.opt_batch)
        #: ``stage`` returns batches already on this CUDA device.
        self.accepts_device_batches = device.type == "cuda"
        self.backend: str = runner.backend.value
        self.precision: str = runner.precision.value
        self.origin = runner.origin
        self.fallbacks = fallbacks
        self.cache_stats = cache_stats
        self.load_seconds = load_seconds
        self.warmup_seconds: float | None = None
        self._runner = runner
        #: CUDA graphs per bucket (``gpu.cudaGraphs`` on CUDA), captured at warm-up.
        self._graphed: graphs.GraphedForward | None = None
        self._warm = False
        self._stager = staging.BatchStager(spec, device, runner.input_dtype, runner.channels_last)

    @classmethod
    def load(
        cls,
        model: config.ModelConfig,
        engine_cache: config.EngineCacheConfig,
        gpu: config.GpuConfig,
        device: str | None = None,
        *,
        plan: plan_mod.BatchPlan | None = None,
    ) -> Engine:
        """Load, check and compile (or fetch from the cache) the configured model.

        ``plan`` is the batch plan shared with the batcher (derived from
        ``model.batching`` when not given).
        """
        started = time.monotonic()
        staging.configure_allocator(gpu)
        dev = resolve_device(device)
        staging.apply_memory_fraction(gpu, dev)
        if plan is None:
            plan = plan_mod.from_config(model.batching)
        spec = spec_mod.from_model_config(model, plan)
        source = loading.load_source(model, spec)
        loading.probe(source, model, loading.probe_device(source, dev))
        cache = cache_mod.EngineCache(engine_cache)
        compiled.share_inductor_cache(cache, keys.device_identity(dev))
        runner, fallbacks = backends.select(source, model, dev, cache)
        graphed: graphs.GraphedForward | None = None
        if gpu.cuda_graphs:
            runner, graphed = graphs.wrap(runner, dev)
        engine = cls(
            model=model,
            spec=source.spec,
            plan=plan,
            device=dev,
            runner=runner,
            fallbacks=fallbacks,
            cache_stats=cache.stats,
            load_seconds=time.monotonic() - started,
        )
        engine._graphed = graphed
        log.info(
            "engine ready to warm up: %s on %s, %s, %.2fs (fallbacks: %s)",
            engine.backend,
            dev,
            engine.precision,
            engine.load_seconds,
            fallbacks or "none",
        )
        return engine

    @property
    def buckets(self) -> tuple[int, ...]:
        return self.spec.buckets

    @property
    def warmed_up(self) -> bool:
        return self._warm

    def warmup(self) -> None:
        """Run every batch bucket once (compiles each bucket on compiled backends)."""
        started = time.monotonic()
        for bucket in self.spec.buckets:
            frames = torch.zeros((bucket, *self.input_shape), dtype=self.spec.dtype)
            self._forward(frames, bucket, strict=False)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        if self._graphed is not None:
            for shape, cause in self._graphed.failures.items():
                self.fallbacks.append(("cuda-graph", f"batch {shape[0]}: {cause}"))
        self._warm = True
        self.warmup_seconds = time.monotonic() - started
        log.info("warm-up of buckets %s took %.2fs", self.spec.buckets, self.warmup_seconds)

    @property
    def pipeline_depth(self) -> int:
        """Batches staged or running at once: 2 on CUDA (the next batch is copied while
        one computes), else 1."""
        return self._stager.slots

    def stage(self, frames: Sequence[torch.Tensor]) -> torch.Tensor:
        """Collate ``(C, H, W)`` float32 CPU frames into this engine's batch buffers.

        On CUDA the frames go through pinned memory and are copied to the device on a
        side stream; :meth:`run_batch` waits for that copy.
        """
        return self._stager.collate(frames)

    def run_batch(self, batch: torch.Tensor) -> list[Detections]:
        """Detect on a ``(B, C, H, W)`` float32 batch, ``1 <= B <= max_batch_size``.

        The batch is on the CPU, or one :meth:`stage` returned.
        """
        if batch.ndim != 4 or tuple(batch.shape[1:]) != self.input_shape:
            dims = ", ".join(map(str, self.input_shape))
            raise ValueError(f"batch has shape {tuple(batch.shape)}, expected (B, {dims})")
        if batch.dtype != self.spec.dtype:
            raise ValueError(f"batch dtype is {batch.dtype}, expected {self.spec.dtype}")
        n = batch.shape[0]
        if not 1 <= n <= self.max_batch_size:
            raise ValueError(f"batch of {n} frames is outside 1..{self.max_batch_size}")
        pad = self._runner.pads_to_buckets or self.spec.fixed_batch
        size = self.spec.bucket_for(n) if pad else n
        output = self._forward(batch, size, strict=self._warm)
        return postprocess.to_detections(
            output,
            self.model.output_format,
            batch=n,
            input_hw=(self.spec.height, self.spec.width),
            score_threshold=self.model.score_threshold,
            iou_threshold=self.model.iou_threshold,
        )

    def _forward(self, frames: torch.Tensor, size: int, strict: bool) -> object:
        x = self._stager.stage(frames, size)
        with torch.inference_mode(), self._stance(strict):
            return self._runner.forward(x)

    @contextlib.contextmanager
    def _stance(self, strict: bool) -> Iterator[None]:
        if strict and self._runner.strict_after_warmup:
            with torch.compiler.set_stance("fail_on_recompile"):
                yield
        else:
            yield

    def memory_stats(self) -> dict[str, int]:
        return staging.memory_stats(self.device)

    def stats(self) -> stats_mod.EngineStats:
        """The backend, fallbacks, cache counters and device memory, as one snapshot."""
        return stats_mod.EngineStats(
            backend=self.backend,
            fallbacks=tuple((str(b), str(c)) for b, c in self.fallbacks),
            cache=self.cache_stats.as_dict(),
            memory=self.memory_stats(),
        )

    def describe(self) -> dict[str, object]:
        """What ``/ready`` shows about the engine."""
        return {
            "backend": self.backend,
            "precision": self.precision,
            "device": str(self.device),
            "origin": self.origin,
            "fallbacks": [{"backend": b, "cause": c} for b, c in self.fallbacks],
            "buckets": list(self.spec.buckets),
            "cuda_graphs": (
                [] if self._graphed is None else [shape[0] for shape in self._graphed.captured]
            ),
            "max_batch_size": self.max_batch_size,
            "input_shape": list(self.input_shape),
            "warmed_up": self._warm,
            "cache": self.cache_stats.as_dict(),
        }
