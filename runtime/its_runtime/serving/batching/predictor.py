"""How long a batch will take to compute, learnt from the batches that ran.

The scheduler sheds a frame at dispatch when its deadline falls before its batch's
predicted finish, so the frame fails at once instead of after wasting a batch slot.
Estimates are kept per engine bucket (the shared
:class:`~its_runtime.engine.plan.BatchPlan`), because a compiled engine pads a batch
of 5 to its bucket of 8 and so costs what 8 costs. An estimate is an exponentially
weighted mean (new batches weigh 0.2); an unmeasured bucket borrows the nearest
measured one below it, and with none measured there is no prediction (no shedding).
"""

from __future__ import annotations

from its_runtime.engine import plan as plan_mod


class LatencyPredictor:
    def __init__(self, plan: plan_mod.BatchPlan) -> None:
        self._plan = plan
        self._estimate: dict[int, float] = {}  # bucket -> EWMA compute seconds

    def learn(self, size: int, seconds: float) -> None:
        bucket = self._plan.bucket_for(size)
        old = self._estimate.get(bucket)
        self._estimate[bucket] = seconds if old is None else 0.8 * old + 0.2 * seconds

    def predict(self, size: int) -> float | None:
        """Compute seconds for a batch of ``size``: its bucket's, else the nearest below."""
        bucket = self._plan.bucket_for(size)
        known = [s for s in self._estimate if s <= bucket]
        return self._estimate[max(known)] if known else None
