"""Scrape-time collectors: engine and GPU state read when Prometheus scrapes.

They read the state another component keeps (the engine's stats snapshot, NVML)
instead of being updated as things happen. The engine produces a typed snapshot
(``stats()``); exporters publish it. Their sources are Protocols, so this module
depends on no engine or NVML code.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# ---------------------------------------------------------------------------
# Serving: scrape-time collectors for the engine and the GPU
# ---------------------------------------------------------------------------


class EngineSnapshot(Protocol):
    """One reading of the engine (``its_runtime.engine.stats.EngineStats`` is one)."""

    @property
    def backend(self) -> str: ...

    @property
    def fallbacks(self) -> Sequence[tuple[str, str]]:
        """(backend that was skipped or failed, cause) pairs, in order."""
        ...

    @property
    def cache(self) -> Mapping[str, int]:
        """hits, misses, builds, evictions, corrupt_rebuilds, build_failures."""
        ...

    @property
    def memory(self) -> Mapping[str, int]:
        """allocated, reserved, peak (device memory); empty off CUDA."""
        ...


class EngineStatsSource(Protocol):
    """What :class:`EngineCollector` reads; the engine (and the lazy engine) provide it."""

    def stats(self) -> EngineSnapshot: ...


class EngineCollector(Collector):
    """Publishes the engine's backend, fallbacks, cache counters and device memory."""

    def __init__(self, source: EngineStatsSource) -> None:
        self._source = source

    def describe(self) -> Iterable[Metric]:
        return []  # collected lazily; the registry must not call collect() at register

    def collect(self) -> Iterator[Metric]:
        stats = self._source.stats()
        backend = GaugeMetricFamily(
            "its_backend_info",
            "The inference backend in use (value is always 1).",
            labels=["backend"],
        )
        backend.add_metric([stats.backend], 1.0)
        yield backend
        fallbacks = GaugeMetricFamily(
            "its_backend_fallbacks",
            "Backends skipped or failed at load, with their cause (value is always 1).",
            labels=["backend", "cause"],
        )
        causes = list(stats.fallbacks)
        for skipped, cause in causes:
            fallbacks.add_metric([skipped, cause[:200]], 1.0)
        yield fallbacks
        # Not ``..._count``: Prometheus reserves that suffix for histograms and summaries.
        count = GaugeMetricFamily(
            "its_backend_fallbacks_taken", "Number of backend fallbacks taken at load."
        )
        count.add_metric([], float(len(causes)))
        yield count
        counts = stats.cache
        for key, help_text in (
            ("hits", "Engine cache lookups that found a usable engine."),
            ("misses", "Engine cache lookups that found none."),
            ("builds", "Engines built (compiled) by this process."),
            ("evictions", "Engine cache entries evicted by the size cap (LRU)."),
            ("corrupt_rebuilds", "Corrupt or incompatible cache entries rebuilt."),
            ("build_failures", "Engine builds that failed (the engine fell back)."),
        ):
            family = CounterMetricFamily(f"its_engine_cache_{key}", help_text)
            family.add_metric([], float(counts.get(key, 0)))
            yield family
        memory = GaugeMetricFamily(
            "its_gpu_memory_bytes",
            "CUDA caching-allocator memory of this process: allocated, reserved, peak.",
            labels=["kind"],
        )
        for kind, value in stats.memory.items():
            memory.add_metric([kind], float(value))
        yield memory


class GpuSample(Protocol):
    @property
    def index(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def utilization(self) -> float:
        """0..1"""
        ...

    @property
    def memory_used_bytes(self) -> int: ...
    @property
    def memory_total_bytes(self) -> int: ...
    @property
    def temperature_celsius(self) -> float: ...


class GpuStatsSource(Protocol):
    """What :class:`GpuCollector` reads (``observability.telemetry.GpuTelemetry`` provides it)."""

    @property
    def available(self) -> bool: ...

    def sample(self) -> Sequence[GpuSample]: ...


class GpuCollector(Collector):
    """NVML readings at scrape time; only ``its_gpu_telemetry_available 0`` without a GPU."""

    def __init__(self, source: GpuStatsSource) -> None:
        self._source = source

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        available = GaugeMetricFamily(
            "its_gpu_telemetry_available", "1 when NVML telemetry is available, else 0."
        )
        samples = self._source.sample() if self._source.available else []
        available.add_metric([], 1.0 if self._source.available else 0.0)
        yield available
        if not samples:
            return
        labels = ["gpu", "name"]
        util = GaugeMetricFamily(
            "its_gpu_utilization_ratio", "GPU utilisation (0..1) from NVML.", labels=labels
        )
        used = GaugeMetricFamily(
            "its_gpu_memory_used_bytes", "Device memory in use (all processes).", labels=labels
        )
        total = GaugeMetricFamily(
            "its_gpu_memory_total_bytes", "Device memory in total.", labels=labels
        )
        temp = GaugeMetricFamily(
            "its_gpu_temperature_celsius", "GPU core temperature.", labels=labels
        )
        for s in samples:
            key = [str(s.index), s.name]
            util.add_metric(key, s.utilization)
            used.add_metric(key, float(s.memory_used_bytes))
            total.add_metric(key, float(s.memory_total_bytes))
            temp.add_metric(key, s.temperature_celsius)
        yield from (util, used, total, temp)
