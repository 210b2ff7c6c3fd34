"""TensorRT through torch-tensorrt: the fastest backend, on NVIDIA GPUs only.

``torch_tensorrt`` is imported only inside these functions, and only once CUDA is
known to be present, so CPU images and machines without it never pay for (or break
on) the import. The engine is built from the exported program with one dynamic batch
profile, ``Input(min=1, opt=optBatchSize, max=maxBatchSize)``, so it runs any batch
without padding, and saved as an ExportedProgram carrying the serialised engine into
the runtime's own cache (its key adds the GPU model, compute capability and versions
that torch-tensorrt's own engine cache leaves out; that cache is switched off).

Precision: FP16 builds with FP16 kernels enabled. INT8 needs a quantised model
(Q/DQ nodes, e.g. from TensorRT Model Optimizer); for a plain model TensorRT can only
pick FP16/FP32 kernels, and the log says so. The keyword arguments of
``torch_tensorrt.dynamo.compile`` have changed across releases (``enabled_precisions``
is deprecated in favour of explicit typing plus autocast), so they are chosen from
the installed function's signature.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import pathlib
from typing import Any

import torch
from torch.export import passes as export_passes

from its_runtime import config
from its_runtime.engine import cache as cache_mod
from its_runtime.engine import keys, loading
from its_runtime.engine.runner import Runner

log = logging.getLogger(__name__)


def unavailable_reason(device: torch.device) -> str | None:
    """Why TensorRT cannot be used here, or None if it can."""
    if device.type != "cuda":
        return "no CUDA device"
    try:
        import torch_tensorrt  # noqa: F401
    except Exception as exc:
        return f"torch_tensorrt is not importable ({type(exc).__name__}: {exc})"
    return None


def version() -> str:
    import torch_tensorrt

    trt = importlib.import_module("tensorrt")
    return f"torch_tensorrt {torch_tensorrt.__version__}, tensorrt {trt.__version__}"


def _compile_kwargs(
    compile_fn: Any, precision: config.Precision, trt_inputs: list[Any]
) -> dict[str, Any]:
    params = inspect.signature(compile_fn).parameters
    kwargs: dict[str, Any] = {"arg_inputs" if "arg_inputs" in params else "inputs": trt_inputs}
    optional = {
        "min_block_size": 1,
        "truncate_double": True,
        "cache_built_engines": False,
        "reuse_cached_engines": False,
    }
    kwargs.update({k: v for k, v in optional.items() if k in params})
    if precision is config.Precision.FP32:
        return kwargs
    if precision is config.Precision.INT8:
        log.warning("INT8 needs a quantised (Q/DQ) model; TensorRT will use FP16 where it is not")
    if "enable_autocast" in params:
        kwargs["enable_autocast"] = True
        if "autocast_low_precision_type" in params:
            kwargs["autocast_low_precision_type"] = torch.float16
    elif "enabled_precisions" in params:
        kwargs["enabled_precisions"] = (
            {torch.float16, torch.int8} if precision is config.Precision.INT8 else {torch.float16}
        )
        if "use_explicit_typing" in params:
            kwargs["use_explicit_typing"] = False
    return kwargs


def tensorrt_runner(
    source: loading.ModelSource,
    device: torch.device,
    precision: config.Precision,
    cache: cache_mod.EngineCache,
    key: keys.EngineKey,
) -> Runner:
    import torch_tensorrt

    spec = source.spec
    frame = spec.frame_shape

    def profile() -> Any:
        return torch_tensorrt.Input(
            min_shape=(1, *frame),
            opt_shape=(spec.opt_batch, *frame),
            max_shape=(spec.max_batch, *frame),
            dtype=spec.dtype,
        )

    def build(path: pathlib.Path) -> None:
        ep = export_passes.move_to_device_pass(source.exported_program(), device)
        kwargs = _compile_kwargs(torch_tensorrt.dynamo.compile, precision, [profile()])
        with torch.cuda.device(device):
            trt_module = torch_tensorrt.dynamo.compile(ep, device=device, **kwargs)
            torch_tensorrt.save(
                trt_module, str(path), output_format="exported_program", arg_inputs=[profile()]
            )

    def load(path: pathlib.Path) -> Any:
        with torch.cuda.device(device):
            program = torch_tensorrt.load(str(path))
            module = program.module()
            x = torch.zeros((1, *frame), dtype=spec.dtype, device=device)
            with torch.inference_mode():
                module(x)  # an engine from another device/version fails here, not later
        return module

    builds_before = cache.stats.builds
    forward = cache.get_or_build(key, ".pt2", build, load)
    return Runner(
        forward=forward,
        backend=config.Backend.TENSORRT,
        precision=config.Precision.FP32
        if precision is config.Precision.FP32
        else config.Precision.FP16,
        origin="built" if cache.stats.builds > builds_before else "cache",
    )
