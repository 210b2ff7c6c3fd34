"""Compiled PyTorch backends: AOTInductor packages and torch.compile with buckets.

AOTInductor compiles the exported program ahead of time into a ``.pt2`` package of
native code (C++ on CPU, Triton/CUDA kernels on GPU). Loading one is a ``dlopen``:
no tracing, no compiling, which makes it the fastest warm start and the preferred
compiled backend. The program is compiled with its batch dimension dynamic (1 to the
maximum batch), so any batch runs as is, with no padding.

torch.compile is the fallback when AOTInductor cannot compile the model. It is used
with ``dynamic=False`` and fed only bucket-sized batches, so it compiles once per
bucket during warm-up; the recompile limit is raised above the bucket count (the
default of 8 would otherwise silently send a model with many buckets to eager), and
after warm-up it runs under the ``fail_on_recompile`` stance, so an unexpected
recompile is an error rather than a silent slowdown. What it caches on the volume is
``torch.compiler.save_cache_artifacts()`` (Inductor's compiled kernels): a warm start
still traces with Dynamo, but skips code generation and the C++/Triton compile.

Neither backend builds here for a TorchScript model directly: it is first converted
to an ExportedProgram (``ModelSource.exported_program``), which fails for some
TorchScript; the failure is then this backend's recorded fallback cause.

Inductor keeps a cache of its own (``TORCHINDUCTOR_CACHE_DIR``, by default under
``/tmp``), which even loading an AOTInductor package consults: it compiles and runs
small probe programs to find the CPU's vector ISA, 5 to 15 seconds on 2 cores, on
every start of a pod whose ``/tmp`` is empty. Unless the user set that variable,
``share_inductor_cache`` points it at a per-device subdirectory of the engine-cache
volume, so those probes (and the compile backend's FX graph cache) are paid once per
volume, not once per pod. That subdirectory is small and is not counted in the cap.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
from collections.abc import Callable
from typing import Any

import torch
from torch.export import passes as export_passes

from its_runtime import config
from its_runtime.engine import cache as cache_mod
from its_runtime.engine import keys, loading
from its_runtime.engine import spec as spec_mod
from its_runtime.engine.runner import Runner

log = logging.getLogger(__name__)


def _device_program(
    source: loading.ModelSource, device: torch.device
) -> torch.export.ExportedProgram:
    ep = source.exported_program()
    if loading.program_device(ep) != device:
        ep = export_passes.move_to_device_pass(ep, device)
    return ep


INDUCTOR_ENV = "TORCHINDUCTOR_CACHE_DIR"


def share_inductor_cache(
    cache: cache_mod.EngineCache, device: keys.DeviceIdentity
) -> pathlib.Path | None:
    """Put Inductor's own cache on the engine-cache volume, unless already set."""
    if os.environ.get(INDUCTOR_ENV) or cache.disabled_reason is not None:
        return None
    identity = f"{device.kind}|{device.name}|{device.capability}|torch {torch.__version__}"
    path = cache.dir / "inductor" / hashlib.sha256(identity.encode()).hexdigest()[:16]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("inductor cache stays in its default place: %s", exc)
        return None
    os.environ[INDUCTOR_ENV] = str(path)
    log.info("inductor cache: %s", path)
    return path


# -- AOTInductor ---------------------------------------------------------------


def load_aoti_package(path: pathlib.Path, device: torch.device) -> Callable[[torch.Tensor], Any]:
    index = device.index if device.type == "cuda" and device.index is not None else -1
    runner = torch._inductor.aoti_load_package(str(path), device_index=index)
    return runner


def aoti_runner(
    source: loading.ModelSource,
    device: torch.device,
    cache: cache_mod.EngineCache,
    key: keys.EngineKey,
) -> Runner:
    def build(path: pathlib.Path) -> None:
        ep = _device_program(source, device)
        torch._inductor.aoti_compile_and_package(ep, package_path=str(path))

    builds_before = cache.stats.builds
    forward = cache.get_or_build(key, ".pt2", build, lambda p: load_aoti_package(p, device))
    return Runner(
        forward=forward,
        backend=config.Backend.AOT_INDUCTOR,
        precision=config.Precision.FP32,
        origin="built" if cache.stats.builds > builds_before else "cache",
    )


def prebuilt_aoti_runner(source: loading.ModelSource) -> Runner:
    """A model file that already is an AOTInductor package: nothing to build or cache."""
    return Runner(
        forward=source.forward,
        backend=config.Backend.AOT_INDUCTOR,
        precision=config.Precision.FP32,
        origin="none",
    )


# -- torch.compile with batch buckets ----------------------------------------


def _raise_recompile_limit(buckets: int) -> None:
    dynamo_config: Any = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # renamed in torch 2.6+
        if hasattr(dynamo_config, name) and getattr(dynamo_config, name) < buckets + 2:
            setattr(dynamo_config, name, buckets + 2)
    if getattr(dynamo_config, "accumulated_recompile_limit", 1 << 30) < 4 * (buckets + 2):
        dynamo_config.accumulated_recompile_limit = 4 * (buckets + 2)


def run_buckets(
    forward: Callable[[torch.Tensor], Any],
    spec: spec_mod.InputSpec,
    device: torch.device,
    dtype: torch.dtype,
    autocast: bool,
) -> None:
    """Run one zero batch per bucket (this is what triggers each bucket's compile)."""
    for bucket in spec.buckets:
        x = torch.zeros((bucket, *spec.frame_shape), dtype=dtype, device=device)
        with torch.inference_mode(), _autocast(device, autocast):
            forward(x)


def _autocast(device: torch.device, enabled: bool) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.float16, enabled=enabled)


def with_autocast(
    forward: Callable[[torch.Tensor], Any], device: torch.device
) -> Callable[[torch.Tensor], Any]:
    def run(x: torch.Tensor) -> Any:
        with torch.autocast(device.type, dtype=torch.float16):
            return forward(x)

    return run


def compile_runner(
    source: loading.ModelSource,
    device: torch.device,
    precision: config.Precision,
    cache: cache_mod.EngineCache,
    key: keys.EngineKey,
) -> Runner:
    spec = source.spec
    module = _device_program(source, device).module()
    autocast = device.type == "cuda" and precision is not config.Precision.FP32
    _raise_recompile_limit(len(spec.buckets))
    built: dict[str, Callable[[torch.Tensor], Any]] = {}

    def build(path: pathlib.Path) -> None:
        compiled = torch.compile(module, dynamic=False)
        run_buckets(compiled, spec, device, spec.dtype, autocast)
        artifacts = torch.compiler.save_cache_artifacts()
        if artifacts is None:
            raise RuntimeError("torch.compile left no cache artifacts to save")
        path.write_bytes(artifacts[0])
        built["forward"] = compiled

    def load(path: pathlib.Path) -> Callable[[torch.Tensor], Any]:
        if "forward" in built:
            return built["forward"]
        if torch.compiler.load_cache_artifacts(path.read_bytes()) is None:
            raise RuntimeError("compile cache artifacts could not be read")
        compiled: Callable[[torch.Tensor], Any] = torch.compile(module, dynamic=False)
        return compiled

    builds_before = cache.stats.builds
    forward = cache.get_or_build(key, ".bin", build, load)
    return Runner(
        forward=with_autocast(forward, device) if autocast else forward,
        backend=config.Backend.COMPILE,
        precision=config.Precision.FP16 if autocast else config.Precision.FP32,
        pads_to_buckets=True,
        strict_after_warmup=True,
        origin="built" if cache.stats.builds > builds_before else "cache",
    )


def eager_runner(
    source: loading.ModelSource, device: torch.device, precision: config.Precision
) -> Runner:
    forward: Callable[[torch.Tensor], Any]
    channels_last = False
    if source.exported is not None:
        module = _device_program(source, device).module()
        if device.type == "cuda":  # convolution nets run faster NHWC on tensor cores
            module = module.to(memory_format=torch.channels_last)
            channels_last = True
        forward = module
    elif source.torchscript is not None:
        forward = source.torchscript.to(device)
    else:
        raise RuntimeError(f"{source.format.value} models run only as AOTInductor")
    autocast = device.type == "cuda" and precision is not config.Precision.FP32
    return Runner(
        forward=with_autocast(forward, device) if autocast else forward,
        backend=config.Backend.EAGER,
        precision=config.Precision.FP16 if autocast else config.Precision.FP32,
        channels_last=channels_last,
    )
