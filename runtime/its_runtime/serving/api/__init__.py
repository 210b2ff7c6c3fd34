"""The runtime's HTTP layer (aiohttp): inference, probes, metrics and the performance report.

Handlers depend on :class:`~its_runtime.serving.api.services.Services`, a typed bundle stored on
the application (the batcher, readiness, the performance tracker, the preprocessor),
never on the engine itself, so the same routes serve a TensorRT engine in production
and a small CPU model in tests. ``its_runtime.serving.app`` assembles the application.
"""
