"""Write a detector as each file format the runtime loads.

Tests, benchmarks and anyone preparing a model volume use the same three writers:

* ``save_exported_program``: ``torch.export`` with the batch dimension dynamic
  (1..max_batch) so one file serves every batch size; a model whose output is a
  per-image list (torchvision style) cannot have a dynamic batch, and is exported for
  exactly ``max_batch`` frames instead (the runtime then pads every batch to it).
* ``save_torchscript``: ``torch.jit.trace`` (deprecated in torch 2.14, so its warning
  is silenced here; the format is supported for models that only exist as such).
* ``save_aoti_package``: ``aoti_compile_and_package`` of the exported program,
  for the device given; the runtime loads it with no compile step.

``python -m its_runtime.kits.models.export --arch yolo --format ExportedProgram out.pt2``
writes one from the command line.
"""

from __future__ import annotations

import argparse
import pathlib
import warnings
from collections.abc import Callable

import torch
from torch import nn

from its_runtime import config
from its_runtime.kits.models import ssdlite, yolo

#: Untyped in torch's stubs.
_jit_trace: Callable[..., torch.nn.Module] = torch.jit.trace


def export_program(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    max_batch: int,
    dynamic_batch: bool = True,
    device: str = "cpu",
) -> torch.export.ExportedProgram:
    batch = min(2, max_batch) if dynamic_batch else max_batch
    sample = torch.rand((batch, *input_shape), device=device)
    model = model.to(device).eval()
    if dynamic_batch and max_batch > 1:
        dim = torch.export.Dim("batch", min=1, max=max_batch)
        return torch.export.export(model, (sample,), dynamic_shapes=({0: dim},))
    return torch.export.export(model, (sample,))


def save_exported_program(
    model: nn.Module,
    path: pathlib.Path,
    input_shape: tuple[int, int, int],
    max_batch: int,
    dynamic_batch: bool = True,
) -> pathlib.Path:
    torch.export.save(export_program(model, input_shape, max_batch, dynamic_batch), str(path))
    return path


def save_torchscript(
    model: nn.Module, path: pathlib.Path, input_shape: tuple[int, int, int]
) -> pathlib.Path:
    sample = torch.rand((2, *input_shape))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        traced = _jit_trace(model.eval(), (sample,))
        torch.jit.save(traced, str(path))
    return path


def save_aoti_package(
    model: nn.Module,
    path: pathlib.Path,
    input_shape: tuple[int, int, int],
    max_batch: int,
    dynamic_batch: bool = True,
    device: str = "cpu",
) -> pathlib.Path:
    ep = export_program(model, input_shape, max_batch, dynamic_batch, device)
    torch._inductor.aoti_compile_and_package(ep, package_path=str(path))
    return path


def build(arch: str, num_classes: int, input_shape: tuple[int, int, int], width: int) -> nn.Module:
    if arch == "yolo":
        return yolo.build_yolo(num_classes, width, input_shape[0])
    if arch == "yolo-torchvision":
        return yolo.build_torchvision_style(num_classes, width, input_shape[0])
    if arch == "ssdlite":
        return ssdlite.build_ssdlite_raw(num_classes, (input_shape[1], input_shape[2]))
    raise ValueError(f"unknown arch {arch!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--arch", choices=["yolo", "yolo-torchvision", "ssdlite"], default="yolo")
    parser.add_argument(
        "--format", choices=[f.value for f in config.ModelFormat], default="ExportedProgram"
    )
    parser.add_argument("--input-shape", type=int, nargs=3, default=[3, 320, 320])
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    shape = (args.input_shape[0], args.input_shape[1], args.input_shape[2])
    model = build(args.arch, args.classes, shape, args.width)
    fmt = config.ModelFormat(args.format)
    dynamic = args.arch != "yolo-torchvision"
    if fmt is config.ModelFormat.EXPORTED_PROGRAM:
        save_exported_program(model, args.out, shape, args.max_batch, dynamic)
    elif fmt is config.ModelFormat.TORCHSCRIPT:
        save_torchscript(model, args.out, shape)
    else:
        save_aoti_package(model, args.out, shape, args.max_batch, dynamic, args.device)
    print(args.out)


if __name__ == "__main__":
    main()
