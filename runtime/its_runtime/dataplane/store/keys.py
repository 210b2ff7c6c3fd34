"""Idempotency keys for rows: UUIDs laid out like UUIDv7 (time first, then random).

Every event and detection gets its key when it is created, before it is ever written.
The key travels with the row into the journal, so a replay after an outage (or a
batch that committed but whose acknowledgement was lost) inserts nothing twice:
``ON CONFLICT (key) DO NOTHING``. Time-ordered keys keep the primary-key B-tree
appending at its right edge instead of splitting random pages like UUIDv4 would.
"""

from __future__ import annotations

import os
import time
import uuid


def new_key(at: float | None = None) -> uuid.UUID:
    """A fresh key; ``at`` (epoch seconds) sets its time prefix, default now."""
    ms = int((time.time() if at is None else at) * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms << 80) | (0x7 << 76) | (rand & ((1 << 76) - 1))
    # RFC 4122 variant bits (10xx) in the top of the clock_seq field.
    value = (value & ~(0xC << 60)) | (0x8 << 60)
    return uuid.UUID(int=value)
