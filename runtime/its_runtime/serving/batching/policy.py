"""When a batch goes and how many frames it takes: Triton's rules over the batch plan.

* Batches are capped at the largest preferred size (the plan's maximum when none is
  set); a capped batch goes at once; else the largest preferred size that can be
  formed goes at once; else the batch waits for more frames only while no queued frame
  has waited ``maxQueueDelayMs``, then goes as it is. Draining sends what is queued.
* **No batching tax when idle.** Waiting for company only pays while the executor is
  busy: frames that arrive during a batch's compute join the next batch anyway. So
  when nothing is in flight, what is queued goes at once (up to the cap), and a lone
  frame on an idle server is computed without waiting ``maxQueueDelayMs``. Under load
  the executor is never idle and batches form as before.
* The policy knows the engine's buckets (the shared
  :class:`~its_runtime.engine.plan.BatchPlan`): a decision names the bucket its batch
  will run as. A batch that goes because its oldest frame has waited long enough takes
  every queued frame up to the cap, never fewer: with 5 queued and buckets 4 and 8 it
  sends all 5 as one batch of bucket 8 (the engine pads it), rather than 4 now and a
  lone frame a whole batch later; it never exceeds the plan's maximum.

It is a pure function of (queued frames, oldest wait, draining, executor idle), so
it is tested without a loop or a clock.
"""

from __future__ import annotations

import dataclasses

from its_runtime.engine import plan as plan_mod


@dataclasses.dataclass(frozen=True)
class Decision:
    #: Frames to send now; 0 means wait.
    take: int
    #: The engine bucket a batch of ``take`` runs as (0 when waiting).
    bucket: int = 0
    #: When waiting: the longest wait before deciding again (None: until a frame arrives).
    wait_s: float | None = None


class DispatchPolicy:
    def __init__(self, plan: plan_mod.BatchPlan, max_queue_delay_s: float) -> None:
        self.plan = plan
        self.preferred = plan.preferred_sizes
        #: The cap: a batch of this many goes at once.
        self.send_at = self.preferred[-1] if self.preferred else plan.max_batch_size
        self.delay_s = max_queue_delay_s

    def decide(self, queued: int, waited_s: float, closing: bool, idle: bool = False) -> Decision:
        """What to do with ``queued`` frames whose oldest has waited ``waited_s``;
        ``idle``: no batch is being staged or computed."""
        if queued == 0:
            return Decision(0)
        if queued >= self.send_at or closing or idle:
            return self._send(min(queued, self.send_at))
        if self.preferred and queued >= self.preferred[0]:
            return self._send(max(s for s in self.preferred if s <= queued))
        if waited_s >= self.delay_s:
            return self._send(queued)  # queued < send_at here
        return Decision(0, wait_s=self.delay_s - waited_s)

    def _send(self, take: int) -> Decision:
        return Decision(take, bucket=self.plan.bucket_for(take))
