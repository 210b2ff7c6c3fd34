"""The batcher's executor while the engine loads on the batcher's worker thread.

``its-runtime`` listens before the engine exists (a first TensorRT or AOTInductor build
can take minutes), so the batcher and the HTTP layer need an executor at once. Batch
sizes come from the one :class:`~its_runtime.engine.plan.BatchPlan` main derived from
the config and the input shape from the config (the engine is built to both), so
nothing here copies ``maxBatchSize``. Loading runs first on the batcher's single worker
thread, so no batch reaches :meth:`LazyEngine.stage` or :meth:`LazyEngine.run_batch`
before the engine does; until then it stages nothing on the device
(``pipeline_depth`` 1) and reports :meth:`~its_runtime.engine.stats.EngineStats.loading`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch

from its_runtime import config
from its_runtime.detections import Detections
from its_runtime.engine import executor
from its_runtime.engine import plan as plan_mod
from its_runtime.engine import stats as stats_mod

log = logging.getLogger(__name__)


class LazyEngine:
    """Implements the batcher's ``BatchExecutor`` protocol around an engine loaded later."""

    def __init__(self, runtime: config.RuntimeConfig, plan: plan_mod.BatchPlan) -> None:
        self._config = runtime
        self.plan = plan
        self.engine: executor.Engine | None = None
        c, h, w = runtime.model.input_shape
        self.input_shape = (c, h, w)
        self.max_batch_size = plan.max_batch_size

    @property
    def device(self) -> torch.device | None:
        return None if self.engine is None else self.engine.device

    @property
    def accepts_device_batches(self) -> bool:
        """True once an engine on CUDA is loaded: ``stage`` then puts batches on it."""
        return self.engine is not None and self.engine.accepts_device_batches

    @property
    def pipeline_depth(self) -> int:
        return 1 if self.engine is None else self.engine.pipeline_depth

    def load_and_warm_up(self) -> None:
        start = time.monotonic()
        cfg = self._config
        engine = executor.Engine.load(cfg.model, cfg.engine_cache, cfg.gpu, plan=self.plan)
        log.info(
            "engine loaded in %.2fs: backend %s, fallbacks %s",
            time.monotonic() - start,
            engine.backend,
            list(engine.fallbacks) or "none",
        )
        engine.warmup()
        self.engine = engine

    def _loaded(self) -> executor.Engine:
        if self.engine is None:
            raise RuntimeError("the engine is not loaded")
        return self.engine

    def stage(self, frames: Sequence[torch.Tensor]) -> torch.Tensor:
        return self._loaded().stage(frames)

    def run_batch(self, batch: torch.Tensor) -> list[Detections]:
        return self._loaded().run_batch(batch)

    def stats(self) -> stats_mod.EngineStats:
        engine = self.engine
        return stats_mod.EngineStats.loading() if engine is None else engine.stats()
