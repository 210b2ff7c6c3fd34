"""Read the model file and prove, before serving, that it takes the configured input.

Three formats reach the runtime: a ``torch.export`` program (``.pt2`` from
``torch.export.save``), a TorchScript archive, or an AOTInductor package (a ``.pt2``
from ``aoti_compile_and_package``, already compiled for one device). A wrong path, a
file of another format, or a model built for another input size must stop the pod at
start with a message that says which, instead of failing the first request: so an
exported program's input spec is checked statically (rank, C/H/W, dtype, whether the
batch dimension is dynamic) and every model also runs once on a zero batch of the
configured shape, and its output is checked against the configured output format.

TorchScript is deprecated in torch 2.14 (``torch.jit.load`` warns), but users still
have such files: the warning is silenced only around these calls.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import pathlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import torch

from its_runtime import config
from its_runtime.engine import keys, postprocess
from its_runtime.engine import spec as spec_mod
from its_runtime.engine.errors import EngineLoadError

log = logging.getLogger(__name__)

Forward = Callable[[torch.Tensor], Any]
#: Untyped in torch's stubs.
_jit_load: Callable[..., torch.nn.Module] = torch.jit.load


@dataclass
class ModelSource:
    """A loaded model file: an eager forward plus what compilers need to start from."""

    path: pathlib.Path
    format: config.ModelFormat
    digest: str
    spec: spec_mod.InputSpec
    forward: Forward
    exported: torch.export.ExportedProgram | None = None
    torchscript: torch.nn.Module | None = None
    _converted: torch.export.ExportedProgram | None = field(default=None, repr=False)

    def exported_program(self) -> torch.export.ExportedProgram:
        """The model as an ExportedProgram with a dynamic batch dim (for compilers).

        TorchScript is converted on first use; raises if it cannot be (the caller
        records that as the compiled backend's failure cause).
        """
        if self.exported is not None:
            return self.exported
        if self._converted is None:
            if self.torchscript is None:
                raise EngineLoadError(f"{self.format} models cannot be re-compiled")
            self._converted = _torchscript_to_exported(self.torchscript, self.spec)
        return self._converted


@contextlib.contextmanager
def _quiet_torchscript() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        yield


def load_source(model: config.ModelConfig, spec: spec_mod.InputSpec) -> ModelSource:
    """Load ``model.path`` as ``model.format`` and check it against ``spec``."""
    path = pathlib.Path(model.path)
    if not path.is_file():
        raise EngineLoadError(f"model file {path} does not exist or is not a file (model.path)")
    try:
        digest = keys.file_digest(path)
    except OSError as exc:
        raise EngineLoadError(f"model file {path} cannot be read: {exc}") from exc
    fmt = model.format
    if fmt is config.ModelFormat.EXPORTED_PROGRAM:
        ep = _load_with_warnings(lambda: torch.export.load(str(path)), path, fmt)
        spec = _check_exported_inputs(ep, spec, path)
        source = ModelSource(path, fmt, digest, spec, ep.module(), exported=ep)
    elif fmt is config.ModelFormat.TORCHSCRIPT:

        def load_ts() -> torch.nn.Module:
            with _quiet_torchscript():
                module = _jit_load(str(path), map_location="cpu")
            return module.eval()

        ts = _load_with_warnings(load_ts, path, fmt)
        source = ModelSource(path, fmt, digest, spec, ts, torchscript=ts)
    else:
        runner = _load_with_warnings(
            lambda: torch._inductor.aoti_load_package(str(path)), path, fmt
        )
        source = ModelSource(path, fmt, digest, spec, runner)
    return source


def _load_with_warnings(
    load: Callable[[], Any], path: pathlib.Path, fmt: config.ModelFormat
) -> Any:
    """Run a loader; turn its exception (and the warnings it logged) into one message."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return load()
        except Exception as exc:
            notes = "; ".join(str(w.message) for w in caught)[:500]
            hint = {
                config.ModelFormat.EXPORTED_PROGRAM: "a torch.export.save() .pt2 file",
                config.ModelFormat.TORCHSCRIPT: "a torch.jit.save() archive",
                config.ModelFormat.AOTI_PACKAGE: "an aoti_compile_and_package() .pt2 package",
            }[fmt]
            raise EngineLoadError(
                f"model file {path} could not be loaded as {fmt.value} ({hint}); "
                f"check model.format: {type(exc).__name__}: {_first_line(exc)}"
                + (f" [{notes}]" if notes else "")
            ) from exc


def _check_exported_inputs(
    ep: torch.export.ExportedProgram, spec: spec_mod.InputSpec, path: pathlib.Path
) -> spec_mod.InputSpec:
    user_inputs = set(ep.graph_signature.user_inputs)
    placeholders = [n for n in ep.graph.nodes if n.op == "placeholder" and n.name in user_inputs]
    if len(placeholders) != 1:
        raise EngineLoadError(
            f"model {path} takes {len(placeholders)} inputs; the runtime feeds exactly one "
            f"(N, C, H, W) tensor"
        )
    val = placeholders[0].meta.get("val")
    if not isinstance(val, torch.Tensor):
        return spec
    shape = tuple(val.shape)
    want = ("N", *spec.frame_shape)
    static = [d if isinstance(d, int) else None for d in shape]
    if len(shape) != 4 or any(
        s is not None and s != w for s, w in zip(static[1:], spec.frame_shape, strict=True)
    ):
        raise EngineLoadError(
            f"model {path} expects input shape {_fmt_shape(static)} but the config says "
            f"{_fmt_shape(list(want))} (model.inputShape {list(spec.frame_shape)})"
        )
    if val.dtype != spec.dtype:
        raise EngineLoadError(
            f"model {path} expects input dtype {val.dtype} but the runtime feeds {spec.dtype}"
        )
    batch = static[0]
    if batch is None:
        return spec
    if batch == spec.max_batch:
        log.warning(
            "model %s was exported with a fixed batch of %d: every batch is padded to it",
            path,
            batch,
        )
        return dataclasses.replace(spec, buckets=(batch,), opt_batch=batch, fixed_batch=True)
    raise EngineLoadError(
        f"model {path} was exported with a fixed batch size of {batch}, but "
        f"batching.maxBatchSize is {spec.max_batch}: export it with a dynamic batch dim "
        f"(torch.export.Dim) or set maxBatchSize to {batch}"
    )


def program_device(ep: torch.export.ExportedProgram) -> torch.device:
    """Where an exported program's weights live (CPU if it has none)."""
    for tensor in [*ep.state_dict.values(), *ep.constants.values()]:
        if isinstance(tensor, torch.Tensor):
            return tensor.device
    return torch.device("cpu")


def probe_device(source: ModelSource, engine_device: torch.device) -> torch.device:
    """Run the load-time probe where the loaded weights already are."""
    if source.exported is not None:
        return program_device(source.exported)
    if source.torchscript is not None:
        for tensor in [*source.torchscript.parameters(), *source.torchscript.buffers()]:
            return tensor.device
        return torch.device("cpu")
    return engine_device  # an AOTInductor package runs on the device it was built for


def probe(
    source: ModelSource,
    model: config.ModelConfig,
    device: torch.device,
    forward: Forward | None = None,
) -> None:
    """Run one zero batch of the configured shape and check the output's format."""
    run = forward or source.forward
    batch = source.spec.buckets[0]
    x = torch.zeros((batch, *source.spec.frame_shape), dtype=source.spec.dtype, device=device)
    try:
        with torch.inference_mode(), _quiet_torchscript():
            out = run(x)
    except Exception as exc:
        raise EngineLoadError(
            f"model {source.path} failed on an input of shape {tuple(x.shape)} "
            f"{str(x.dtype).removeprefix('torch.')} (model.inputShape "
            f"{list(source.spec.frame_shape)}): {type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    try:
        postprocess.to_detections(
            out,
            model.output_format,
            batch=batch,
            input_hw=(source.spec.height, source.spec.width),
            score_threshold=model.score_threshold,
            iou_threshold=model.iou_threshold,
        )
    except postprocess.OutputFormatError as exc:
        raise EngineLoadError(
            f"model {source.path} output does not match model.outputFormat "
            f"{model.output_format.value}: {exc}"
        ) from exc


def _torchscript_to_exported(
    ts: torch.nn.Module, spec: spec_mod.InputSpec
) -> torch.export.ExportedProgram:
    """Convert TorchScript to an ExportedProgram with a dynamic batch dim."""
    from torch._export.converter import TS2EPConverter

    sample = torch.zeros((min(2, spec.max_batch), *spec.frame_shape), dtype=spec.dtype)
    with _quiet_torchscript(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = TS2EPConverter(cast(torch.jit.ScriptModule, ts), (sample,)).convert()
        return export_dynamic_batch(converted.module(), spec, sample)


def export_dynamic_batch(
    module: torch.nn.Module, spec: spec_mod.InputSpec, sample: torch.Tensor | None = None
) -> torch.export.ExportedProgram:
    """``torch.export`` a module with the batch dim dynamic in 1..max_batch."""
    if sample is None:
        sample = torch.zeros((min(2, spec.max_batch), *spec.frame_shape), dtype=spec.dtype)
    if spec.max_batch == 1:
        return torch.export.export(module, (sample,))
    batch = torch.export.Dim("batch", min=1, max=spec.max_batch)
    return torch.export.export(module, (sample,), dynamic_shapes=({0: batch},))


def _fmt_shape(shape: list[Any]) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:400] if text else type(exc).__name__
