"""Exponential reconnect backoff with jitter.

Jitter matters for a fleet: after a network blip every camera of every replica would
otherwise retry in lock-step and hit the cameras (or the VMS proxy) at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2
    attempt: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        """The wait before the next attempt; each call lengthens the next one."""
        base = min(self.max_s, self.initial_s * self.factor**self.attempt)
        self.attempt += 1
        spread = base * self.jitter
        return max(0.0, min(self.max_s, base + self._rng.uniform(-spread, spread)))

    def reset(self) -> None:
        """Back to the initial delay (after a connection that delivered frames)."""
        self.attempt = 0
