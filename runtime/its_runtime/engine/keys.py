"""The identity of a compiled engine: everything that, if changed, makes it unusable.

torch-tensorrt's own engine cache hashes the graph and input specs but not the GPU
model, the compute capability or the TensorRT/torch versions, so a pod scheduled on a
different GPU model, or started from a newer image, would load an engine that fails
("engine plan file is generated on an incompatible device") or misbehaves. This key
hashes all of it, plus the model file's bytes (weights included), so a changed field
simply selects a different entry; the human-readable fields go into each entry's
manifest so that ``ls`` on the volume explains what is there.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import platform
from dataclasses import dataclass

import torch

from its_runtime.engine import spec as spec_mod

#: Bump when the layout or meaning of cached artifacts changes.
KEY_SCHEMA = 1


@dataclass(frozen=True)
class DeviceIdentity:
    """What a compiled artifact is specific to: device name and capability."""

    kind: str  # "cuda" or "cpu"
    name: str
    capability: str


def file_digest(path: pathlib.Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, streamed (model files can be hundreds of MB)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def device_identity(device: torch.device) -> DeviceIdentity:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return DeviceIdentity("cuda", torch.cuda.get_device_name(index), f"sm_{major}{minor}")
    # Inductor's CPU kernels are built for the host's vector ISA (AVX2, AVX512, ...):
    # a package built on an AVX512 node must not be loaded on an AVX2 node.
    return DeviceIdentity("cpu", _cpu_name(), torch.backends.cpu.get_cpu_capability())


def _cpu_name() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class EngineKey:
    """The fields of an engine's identity and their digest (the cache entry name)."""

    fields: dict[str, str]

    @property
    def digest(self) -> str:
        canonical = json.dumps(self.fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def short(self) -> str:
        return self.digest[:16]


def engine_key(
    *,
    model_digest: str,
    model_format: str,
    input_spec: spec_mod.InputSpec,
    precision: str,
    backend: str,
    backend_version: str,
    device: DeviceIdentity,
) -> EngineKey:
    return EngineKey(
        {
            "schema": str(KEY_SCHEMA),
            "model_sha256": model_digest,
            "model_format": model_format,
            "input": input_spec.describe(),
            "precision": precision,
            "backend": backend,
            "backend_version": backend_version,
            "torch": torch.__version__,
            "cuda": str(torch.version.cuda),
            "device_kind": device.kind,
            "device_name": device.name,
            "compute_capability": device.capability,
        }
    )
