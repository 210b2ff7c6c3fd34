"""Dead letters: rows PostgreSQL can never take, kept in a bounded JSON-lines file.

A row that fails as bad data (see :mod:`.classify`) is isolated by splitting its
batch (:mod:`.delivery`); it must neither block the good rows of its batch nor be
retried forever, and dropping it silently would hide a bug. So each goes here: one
JSON object per line, ``{"at", "table", "reason", "error", "row"}`` (``row`` by column
name, keys and times as the journal writes them), to be read (or fixed and
re-inserted) by a person; every row is also counted
(``its_rows_dead_lettered_total{table,reason}``) and the count is shown in ``/ready``.

Why a file and not a table: the rows were refused by the database, so a table in
that same database may refuse them too (a NUL byte is refused by any text column),
and a file needs no migration. It lives beside the journals, in
``<root>/.dead-letter/<journal directory>.jsonl``: on the same volume, kept after the
pod is gone, and never mistaken for an orphaned journal (adoption skips names that
start with a dot).

**Bounded.** When the file would pass half of ``max_bytes`` it becomes ``.jsonl.1``
(replacing the previous one), so the two together stay within ``max_bytes``; the
rows rotated away were counted when they arrived. A write that fails (disk full)
is logged and reported as False: the caller counts the rows as dropped.

The class is synchronous (plain file I/O); the writer calls it from a worker thread,
never concurrently.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import time
import uuid
from collections.abc import Iterable
from typing import Any, NamedTuple

log = logging.getLogger(__name__)

#: Where dead letters go, under the journal root (a dot: adoption never scans it).
DIRECTORY = ".dead-letter"
DEFAULT_MAX_BYTES = 16 << 20


class DeadLetter(NamedTuple):
    table: str
    reason: str
    error: str
    row: tuple[Any, ...]


class DeadLetters:
    def __init__(self, path: str | pathlib.Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = pathlib.Path(path)
        self.max_bytes = max_bytes
        self.rows = 0
        self.last_error: str | None = None

    @classmethod
    def beside(
        cls, journal_directory: pathlib.Path, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> DeadLetters:
        """The dead letters of the journal in ``journal_directory`` (``<root>/<pod>``)."""
        name = f"{journal_directory.name}.jsonl"
        return cls(journal_directory.parent / DIRECTORY / name, max_bytes)

    def add(self, letters: Iterable[DeadLetter]) -> bool:
        """Append the rows; False (logged) when the file could not be written."""
        now = time.time()
        lines = [_line(now, letter) for letter in letters]
        if not lines:
            return True
        data = "".join(lines).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._rotate_for(len(data))
            with open(self.path, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            log.error("cannot write %d dead letters to %s: %s", len(lines), self.path, exc)
            return False
        self.rows += len(lines)
        return True

    def read(self) -> list[dict[str, Any]]:
        """Every dead letter still kept, oldest first (for tests and tools)."""
        out: list[dict[str, Any]] = []
        for path in (self.path.with_name(self.path.name + ".1"), self.path):
            try:
                text = path.read_text()
            except FileNotFoundError:
                continue
            out += [json.loads(line) for line in text.splitlines() if line]
        return out

    def _rotate_for(self, size: int) -> None:
        try:
            current = self.path.stat().st_size
        except FileNotFoundError:
            return
        if current and current + size > self.max_bytes // 2:
            self.path.replace(self.path.with_name(self.path.name + ".1"))
            log.warning("dead letters in %s rotated (cap %d bytes)", self.path, self.max_bytes)


def _line(at: float, letter: DeadLetter) -> str:
    fields = getattr(letter.row, "_fields", None) or [str(i) for i in range(len(letter.row))]
    row = {name: _plain(value) for name, value in zip(fields, letter.row, strict=True)}
    record = {
        "at": at,
        "table": letter.table,
        "reason": letter.reason,
        "error": letter.error,
        "row": row,
    }
    return json.dumps(record, separators=(",", ":"), default=repr) + "\n"


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return "NaN"
    return value
