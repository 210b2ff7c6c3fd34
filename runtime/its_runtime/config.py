"""The runtime configuration format: defined once, used by both parts.

The operator renders this model (from the AnalyticsPipeline spec) into the ConfigMap
that the runtime pod mounts, and the runtime parses the very same model at start.
The CRD's ``spec.model``/``spec.cameras`` schema is generated from these classes too,
so a field, a bound or a cross-field rule is written here and nowhere else.

Cross-field rules are written twice on purpose, side by side in one class: as a
pydantic validator (so the runtime rejects a bad file with a clear message) and as a
CEL ``x-kubernetes-validations`` rule (so the API server rejects a bad CR at apply
time). Keys are camelCase in files and in the CR, snake_case in Python.

This module must stay importable without torch: the operator image imports it.
"""

from __future__ import annotations

import enum
import pathlib
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import ConfigDict, Field, field_validator, model_validator

from its_runtime.camera_config import (
    CAMERA_SCHEMES,
    CameraConfig,
    Coordinate,
    CountingLine,
    Point,
    Region,
)
from its_runtime.config_services import (
    CacheConfig,
    DatabaseConfig,
    EngineCacheConfig,
    GpuConfig,
    ServerConfig,
    SloConfig,
)
from its_runtime.wire import NAME_PATTERN, WireModel, cel

__all__ = [
    "CAMERA_SCHEMES",
    "CONFIGMAP_KEY",
    "DATABASE_DSN_ENV",
    "DEFAULT_CONFIG_PATH",
    "NAME_PATTERN",
    "POD_NAMESPACE_ENV",
    "POD_NAME_ENV",
    "REDIS_URL_ENV",
    "CacheConfig",
    "CameraConfig",
    "Coordinate",
    "CountingLine",
    "DatabaseConfig",
    "EngineCacheConfig",
    "GpuConfig",
    "Point",
    "Region",
    "ServerConfig",
    "SloConfig",
    "WireModel",
    "cel",
]

#: Where the operator mounts the rendered config, and the runtime looks by default.
DEFAULT_CONFIG_PATH = "/etc/its/runtime.yaml"
#: The key of the rendered config inside the ConfigMap.
CONFIGMAP_KEY = "runtime.yaml"
#: Environment variables the runtime reads Secret-held values from. The operator
#: sets them with ``valueFrom.secretKeyRef``, never with the value itself.
DATABASE_DSN_ENV = "ITS_DATABASE_DSN"
REDIS_URL_ENV = "ITS_REDIS_URL"
#: The pod's identity from the downward API (``fieldRef``): the name is the holder of
#: its membership Lease and the replica recorded on every row; the namespace is where
#: its Leases live. Unset (a process outside Kubernetes): the host name and "default".
POD_NAME_ENV = "POD_NAME"
POD_NAMESPACE_ENV = "POD_NAMESPACE"


class Precision(enum.StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class ModelFormat(enum.StrEnum):
    EXPORTED_PROGRAM = "ExportedProgram"  # torch.export .pt2
    TORCHSCRIPT = "TorchScript"
    AOTI_PACKAGE = "AOTInductorPackage"  # aoti_compile_and_package .pt2


class Backend(enum.StrEnum):
    AUTO = "auto"
    TENSORRT = "tensorrt"
    AOT_INDUCTOR = "aotinductor"
    COMPILE = "compile"
    EAGER = "eager"


class OutputFormat(enum.StrEnum):
    TORCHVISION = "torchvision"  # list of {boxes, scores, labels} dicts
    YOLO = "yolo"  # raw (N, boxes, 4 + classes) tensor; NMS in post-processing


class ResizeMode(enum.StrEnum):
    """How frames become the model input (its_runtime.letterbox does the arithmetic)."""

    STRETCH = "stretch"  # scale each axis to the input size (torchvision SSD style)
    LETTERBOX = "letterbox"  # keep the aspect ratio, pad with grey (YOLO style)


class BatchingConfig(WireModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.optBatchSize <= self.maxBatchSize",
                    "optBatchSize must not exceed maxBatchSize",
                    ".optBatchSize",
                ),
                cel(
                    "!has(self.preferredBatchSizes) || "
                    "self.preferredBatchSizes.all(s, s <= self.maxBatchSize)",
                    "every preferredBatchSizes entry must not exceed maxBatchSize",
                    ".preferredBatchSizes",
                ),
            ]
        }
    )

    max_batch_size: int = Field(8, ge=1, le=256, description="Largest batch the engine runs.")
    opt_batch_size: int = Field(
        4, ge=1, le=256, description="Batch size the engine is tuned for (TensorRT opt shape)."
    )
    preferred_batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list,
        max_length=16,
        description="Batch sizes the batcher prefers to form (Triton semantics).",
    )
    max_queue_delay_ms: float = Field(
        5.0,
        ge=0,
        le=1000,
        description="Longest time a request may wait for a batch to fill before it runs.",
    )
    max_queue_size: int = Field(
        256, ge=1, le=100000, description="Requests queued beyond this are rejected (HTTP 429)."
    )
    default_deadline_ms: float | None = Field(
        None,
        gt=0,
        le=60000,
        description="Deadline for a request that sets none; late requests get HTTP 503.",
    )

    @model_validator(mode="after")
    def _batch_bounds(self) -> Self:
        if self.opt_batch_size > self.max_batch_size:
            raise ValueError("optBatchSize must not exceed maxBatchSize")
        if any(s > self.max_batch_size or s < 1 for s in self.preferred_batch_sizes):
            raise ValueError("every preferredBatchSizes entry must be in [1, maxBatchSize]")
        return self


class ModelConfig(WireModel):
    path: str = Field(
        ...,
        min_length=1,
        max_length=1024,
        description="Path of the model file on the mounted model volume, e.g. /models/det.pt2.",
    )
    format: ModelFormat = Field(
        ModelFormat.EXPORTED_PROGRAM,
        description="ExportedProgram (torch.export .pt2), TorchScript, or AOTInductorPackage.",
    )
    input_shape: list[Annotated[int, Field(ge=1, le=8192)]] = Field(
        default_factory=lambda: [3, 320, 320],
        min_length=3,
        max_length=3,
        description="Per-frame input shape [channels, height, width]; checked at load.",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self[0] == 1 || self[0] == 3", "inputShape[0] (channels) must be 1 or 3")
            ]
        },
    )
    precision: Precision = Field(
        Precision.FP16, description="Engine precision: fp32, fp16 or int8."
    )
    output_format: OutputFormat = Field(
        OutputFormat.TORCHVISION, description="How to read the model's output: torchvision or yolo."
    )
    resize: ResizeMode = Field(
        ResizeMode.STRETCH,
        description=(
            "How frames are fitted to inputShape: stretch scales each axis to it; "
            "letterbox keeps the aspect ratio and pads with grey, as YOLO-style models "
            "are trained. Boxes are mapped back to the frame either way."
        ),
    )
    backend: Backend = Field(
        Backend.AUTO,
        description="Force a backend; auto picks TensorRT, then compiled PyTorch, then eager.",
    )
    class_names: list[str] = Field(
        default_factory=lambda: ["background", "car", "truck", "bus", "motorcycle", "person"],
        max_length=1000,
        description="Class label names indexed by class id.",
    )
    score_threshold: float = Field(0.3, ge=0, le=1, description="Detections below are dropped.")
    iou_threshold: float = Field(0.5, ge=0, le=1, description="NMS IoU threshold (yolo output).")
    batching: BatchingConfig = Field(
        default_factory=BatchingConfig, description="Dynamic batching settings."
    )

    @field_validator("input_shape")
    @classmethod
    def _positive_dims(cls, v: list[int]) -> list[int]:
        if any(d < 1 or d > 8192 for d in v):
            raise ValueError("inputShape dimensions must be in [1, 8192]")
        if v[0] not in (1, 3):
            raise ValueError("inputShape[0] (channels) must be 1 or 3")
        return v


class ScaleOutConfig(WireModel):
    """How the replicas of one pipeline share its cameras: one membership Lease per
    pod, the assignment computed from the live members (``dataplane/membership.py``
    documents the protocol). Disabled: every camera runs in this process."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.leaseDurationSeconds) || !has(self.renewPeriodSeconds) || "
                    "self.leaseDurationSeconds > 3 * self.renewPeriodSeconds",
                    "scaleOut.leaseDurationSeconds must exceed three times renewPeriodSeconds",
                )
            ]
        }
    )

    enabled: bool = Field(False, description="Share cameras across replicas through Leases.")
    pipeline: str = Field(
        "", max_length=200, description="The pipeline's name: the Leases' label value."
    )
    lease_duration_seconds: int = Field(
        10, ge=3, le=300, description="A silent replica's cameras move after this long."
    )
    renew_period_seconds: int = Field(
        2, ge=1, le=60, description="How often a replica renews its Lease and re-reads members."
    )
    max_cameras_per_replica: int = Field(
        32, ge=1, le=1000, description="A replica never analyses more cameras than this."
    )

    @model_validator(mode="after")
    def _lease_outlasts_renewals(self) -> Self:
        if self.lease_duration_seconds <= 3 * self.renew_period_seconds:
            raise ValueError(
                "scaleOut.leaseDurationSeconds must exceed three times renewPeriodSeconds "
                f"(got {self.lease_duration_seconds} and {self.renew_period_seconds})"
            )
        return self


CameraDecode = Literal["auto", "cpu", "gpu"]  # cameraDecode: see dataplane/ingest/decode.py
#: The multi-object tracker of every camera: ours (greedy IoU, ``iou``) or one of the
#: ``trackers`` library's; dataplane/analytics/tracking.py and benchmarks/accuracy.py.
TrackerKind = Literal["iou", "bytetrack", "sort", "ocsort"]
#: ByteTrack: issue 13's rule adopts a library tracker unless ours is more accurate on
#: benchmarks/accuracy.py (and within 20 % CPU); ours ties it there, so it is not.
DEFAULT_TRACKER: TrackerKind = "bytetrack"


class RuntimeConfig(WireModel):
    """Everything one runtime process needs; the file the operator's ConfigMap holds."""

    model: ModelConfig
    cameras: list[CameraConfig] = Field(default_factory=list)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    engine_cache: EngineCacheConfig = Field(default_factory=EngineCacheConfig)
    gpu: GpuConfig = Field(default_factory=GpuConfig)
    slo: SloConfig = Field(default_factory=SloConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    scale_out: ScaleOutConfig = Field(default_factory=ScaleOutConfig)
    camera_decode: CameraDecode = Field(
        "auto",
        description="Camera decode: gpu (NVDEC), cpu, or auto (gpu where CUDA, FFmpeg's CUDA "
        "hwaccel and the codec allow it); a camera falls back to cpu, with the reason in /ready.",
    )
    tracker: TrackerKind = Field(
        DEFAULT_TRACKER,
        description="Multi-object tracker: bytetrack, sort, ocsort (the trackers library) or "
        "iou (the built-in greedy IoU tracker); benchmarks/accuracy.py compares them.",
    )

    @model_validator(mode="after")
    def _unique_camera_names(self) -> Self:
        names = [c.name for c in self.cameras]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"camera names must be unique: {', '.join(dupes)}")
        return self

    def to_yaml(self) -> str:
        """Render deterministically (sorted keys), so its hash only moves with content."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return yaml.safe_dump(data, sort_keys=True)

    @classmethod
    def from_yaml(cls, text: str) -> RuntimeConfig:
        data: Any = yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ValueError("runtime config must be a YAML mapping")
        return cls.model_validate(data)

    @classmethod
    def load(cls, path: str | pathlib.Path) -> RuntimeConfig:
        return cls.from_yaml(pathlib.Path(path).read_text(encoding="utf-8"))
