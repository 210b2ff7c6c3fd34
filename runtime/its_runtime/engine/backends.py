"""Choosing the backend: the fastest that works here, every step down explained.

Order for ``backend: auto``: TensorRT (CUDA and torch_tensorrt present), then
AOTInductor, then torch.compile with batch buckets, then eager. A backend that is not
available or fails to build is recorded as ``(backend, cause)`` in ``fallbacks`` and
logged as a warning, so ``/ready`` and the metrics can say why a pod runs slower than
its neighbours. An explicit ``model.backend`` is taken as an order: it is the only
backend tried, and if it cannot run the engine fails to load with the cause, rather
than quietly serving on something else.

An AOTInductor package as the model file is already compiled: it can only run as
itself. Each buildable backend has its own cache key (backend and its version are
part of it), so a cached TensorRT engine and a cached AOTInductor package of the same
model live side by side.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from its_runtime import config
from its_runtime.engine import cache as cache_mod
from its_runtime.engine import compiled, keys, loading, tensorrt
from its_runtime.engine.errors import EngineLoadError
from its_runtime.engine.runner import Runner

log = logging.getLogger(__name__)

B = config.Backend
AUTO_ORDER = (B.TENSORRT, B.AOT_INDUCTOR, B.COMPILE, B.EAGER)


def effective_precision(precision: config.Precision, device: torch.device) -> config.Precision:
    """CPU kernels gain nothing from FP16/INT8 without a quantised model: run FP32."""
    return precision if device.type == "cuda" else config.Precision.FP32


def _unavailable(
    backend: config.Backend, source: loading.ModelSource, device: torch.device
) -> str | None:
    if source.format is config.ModelFormat.AOTI_PACKAGE and backend is not B.AOT_INDUCTOR:
        return "the model file is an AOTInductor package, which runs only as itself"
    if backend is B.TENSORRT:
        return tensorrt.unavailable_reason(device)
    return None


def _backend_version(backend: config.Backend) -> str:
    if backend is B.TENSORRT:
        return tensorrt.version()
    return f"torch {torch.__version__}"


def select(
    source: loading.ModelSource,
    model: config.ModelConfig,
    device: torch.device,
    cache: cache_mod.EngineCache,
) -> tuple[Runner, list[tuple[str, str]]]:
    """Build the first backend that works; return it and the fallbacks taken."""
    forced = model.backend is not B.AUTO
    candidates = (model.backend,) if forced else AUTO_ORDER
    precision = effective_precision(model.precision, device)
    if precision is not model.precision:
        log.info("precision %s is not used on %s; running %s", model.precision, device, precision)
    fallbacks: list[tuple[str, str]] = []
    device_id = keys.device_identity(device)
    for backend in candidates:
        reason = _unavailable(backend, source, device)
        if reason is None:
            try:
                runner = _build(backend, source, device, precision, cache, device_id)
                log.info(
                    "engine backend %s (%s, %s) for %s",
                    backend.value,
                    runner.precision.value,
                    runner.origin,
                    source.path,
                )
                return runner, fallbacks
            except Exception as exc:
                cache.stats.build_failures += 1
                reason = f"{type(exc).__name__}: {_first_line(exc)}"
        fallbacks.append((backend.value, reason))
        log.warning("backend %s not used: %s", backend.value, reason)
    if forced:
        raise EngineLoadError(
            f"model.backend {model.backend.value} cannot run {source.path}: {fallbacks[-1][1]}"
        )
    causes = "; ".join(f"{b}: {c}" for b, c in fallbacks)
    raise EngineLoadError(f"no backend can run {source.path}: {causes}")


def _build(
    backend: config.Backend,
    source: loading.ModelSource,
    device: torch.device,
    precision: config.Precision,
    cache: cache_mod.EngineCache,
    device_id: keys.DeviceIdentity,
) -> Runner:
    if source.format is config.ModelFormat.AOTI_PACKAGE:
        return compiled.prebuilt_aoti_runner(source)
    if backend is B.EAGER:
        return compiled.eager_runner(source, device, precision)

    def key() -> keys.EngineKey:
        return keys.engine_key(
            model_digest=source.digest,
            model_format=source.format.value,
            input_spec=source.spec,
            precision=precision.value,
            backend=backend.value,
            backend_version=_backend_version(backend),
            device=device_id,
        )

    builders: dict[config.Backend, Callable[[], Runner]] = {
        B.TENSORRT: lambda: tensorrt.tensorrt_runner(source, device, precision, cache, key()),
        B.AOT_INDUCTOR: lambda: compiled.aoti_runner(source, device, cache, key()),
        B.COMPILE: lambda: compiled.compile_runner(source, device, precision, cache, key()),
    }
    return builders[backend]()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
