"""The model/engine layer: load a detector, compile it for this device, run batches.

``Engine`` is what the batcher drives; ``EngineLoadError`` is how it refuses to start;
``EngineCacheStats`` are the engine-cache counters the metrics module exports.
"""

from its_runtime.engine.cache import EngineCacheStats
from its_runtime.engine.errors import EngineLoadError
from its_runtime.engine.executor import Engine

__all__ = ["Engine", "EngineCacheStats", "EngineLoadError"]
