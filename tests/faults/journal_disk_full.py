"""Fault scenario: PostgreSQL down, and the journal's volume fills up; then both come back.

A runtime replica's row writer (:func:`~tests.faults.scenarios.replica`, real
PostgreSQL of its own) takes a camera's rows at ``fps``. PostgreSQL stops, so the writer
journals; then the journal's volume is made full for ``full_s``, so rows can be neither
written nor journalled. What must hold: nothing is lost *silently* (every row the
writer could not journal is counted, in ``rows_dropped["journal_unwritable"]`` and in
``its_journal_dropped_rows_total``), ``/ready``'s ``database`` entry says ``failing``
with the cause and the count while it happens, and once space returns and then
PostgreSQL does, every journalled row lands exactly once.

``lost`` = rows submitted - rows stored - rows the runtime counted as dropped because
the disk was full (must be 0); the dropped count itself is in ``details``.
``recovery_s`` is PostgreSQL back until every row not counted as dropped is stored.

The full volume (:class:`FullVolume`) is a real one where this process may mount: a
size-limited tmpfs under the journal root, filled by a ballast file to a few KiB of
free space (``ENOSPC``; space returns when the ballast is deleted). Elsewhere (no
``CAP_SYS_ADMIN``) it is ``RLIMIT_FSIZE`` on this process with ``SIGXFSZ`` ignored: a
write past the limit fails with ``EFBIG``, as in ``tests/dataplane/writer_disk_full.py``;
space returns when the limit is lifted, before PostgreSQL is started again (a server
forked under the limit would inherit it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator

import asyncpg

from its_runtime.observability.metrics import REGISTRY
from tests.dataplane.support import eventually
from tests.faults.scenarios import Camera, Outcome, private_postgres, replica, stored_events

ROWS_PER_FRAME = 3  # scenarios.frame_rows: one event, two detections
UNWRITABLE = "journal_unwritable"


class FullVolume:
    """The journal root, made full by :meth:`fill` and given space by :meth:`free`."""

    def __init__(self, root: pathlib.Path, how: str = "auto", *, free_bytes: int = 24 << 10):
        self.root = root
        self.free_bytes = free_bytes
        self.mounted = False
        if how in ("auto", "tmpfs"):
            self.mounted = _mount_tmpfs(root, 8 << 20)
            if not self.mounted and how == "tmpfs":
                raise RuntimeError(f"cannot mount a tmpfs at {root}")
        self.how = "tmpfs ENOSPC" if self.mounted else "RLIMIT_FSIZE EFBIG"
        self._ballast = root / "ballast"
        self._limit: tuple[int, int] | None = None
        self._sigxfsz: object = None

    def fill(self, journal_bytes: int) -> None:
        """Leave ``free_bytes`` for the journal (``journal_bytes``: its size now)."""
        if self.mounted:
            st = os.statvfs(self.root)
            ballast = st.f_bavail * st.f_frsize - self.free_bytes
            with self._ballast.open("wb") as f:
                f.truncate(0)
                chunk = b"\0" * (1 << 16)
                while ballast > 0:
                    ballast -= f.write(chunk[: min(len(chunk), ballast)])
            return
        self._sigxfsz = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        self._limit = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (journal_bytes + self.free_bytes, self._limit[1]))

    def free(self) -> None:
        if self.mounted:
            self._ballast.unlink(missing_ok=True)
        elif self._limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, self._limit)
            signal.signal(signal.SIGXFSZ, self._sigxfsz)  # type: ignore[arg-type]
            self._limit = None

    def close(self) -> None:
        self.free()
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.root)], capture_output=True, check=False)
            self.mounted = False


def _mount_tmpfs(root: pathlib.Path, size: int) -> bool:
    mount = shutil.which("mount")
    if os.geteuid() != 0 or mount is None:
        return False
    proc = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size},mode=0755", "its-faults-journal", str(root)],
        capture_output=True,
        check=False,
    )
    return proc.returncode == 0


@contextlib.contextmanager
def full_volume(how: str = "auto") -> Iterator[FullVolume]:
    root = pathlib.Path(tempfile.mkdtemp(prefix="its-faults-fulljournal-"))
    volume = FullVolume(root, how)
    try:
        yield volume
    finally:
        volume.close()
        shutil.rmtree(root, ignore_errors=True)


def _dropped_metric() -> float:
    value = REGISTRY.get_sample_value("its_journal_dropped_rows_total", {"reason": UNWRITABLE})
    return value or 0.0


async def journal_disk_full(full_s: float, *, fps: float = 60.0, how: str = "auto") -> Outcome:
    """PostgreSQL stops; a second later the journal's volume is full, and stays so for
    ``full_s`` after the first row it cost; space returns, and a second later PostgreSQL."""
    metric_before = _dropped_metric()
    with private_postgres() as pg, full_volume(how) as volume:
        camera = Camera("cam-diskfull", fps)
        feeding = asyncio.create_task(camera.run())
        try:
            async with replica(pg.dsn, volume.root, "pod-a") as w:
                camera.target = w
                assert await eventually(lambda: w.rows_written > 0, 10), "no row was written"
                await asyncio.to_thread(pg.stop)
                down_at = time.monotonic()
                assert await eventually(lambda: w.rows_spooled > 0, 10), "nothing journalled"
                journalling = w.health().detail
                await asyncio.sleep(1.0)
                volume.fill(w.journal.size_bytes)
                assert await eventually(lambda: w.rows_dropped.get(UNWRITABLE, 0) > 0, 10), (
                    f"the full volume ({volume.how}) cost no row: {w.details()}"
                )
                await asyncio.sleep(full_s)
                while_full = w.health()
                dropped_then = w.rows_dropped.get(UNWRITABLE, 0)
                volume.free()
                freed = await eventually(lambda: w.journal_error is None, 10)
                after_space = w.health().detail
                spooled_at_free = w.rows_spooled
                await asyncio.sleep(1.0)
                journalled_after_space = w.rows_spooled - spooled_at_free
                await asyncio.to_thread(pg.start)
                back_at = time.monotonic()
                due = camera_rows(camera) - w.rows_dropped.get(UNWRITABLE, 0)
                recovery_s = await _until_rows_stored(pg.dsn, due, timeout_s=60)
                camera.target = None
                await w.flush()
                assert await w.wait_drained(30), w.details()
                after = w.health().detail
                details = w.details()
            events, keys, detections = await stored_events(pg.dsn)
        finally:
            feeding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeding
    submitted = camera_rows(camera)
    dropped = details["rows_dropped"]
    unwritable = dropped.get(UNWRITABLE, 0)
    return Outcome(
        name="postgres_down_journal_disk_full",
        lost=submitted - (events + detections) - unwritable,
        duplicated=(events - len(keys)) + (detections - 2 * events),
        recovery_s=round(recovery_s, 3),
        details={
            "full_by": volume.how,
            "postgres_down_s": round(back_at - down_at, 2),
            "full_s": full_s,
            "rows_submitted": submitted,
            "rows_stored": events + detections,
            "rows_dropped_disk_full": unwritable,
            "rows_dropped_other": {k: n for k, n in dropped.items() if k != UNWRITABLE},
            "dropped_metric": _dropped_metric() - metric_before,
            "frames_missing": len(camera.keys - keys),
            "rows_journalled": details["rows_spooled"],
            "rows_replayed": details["rows_replayed"],
            "journalled_after_space_returned": journalled_after_space,
            "ready_journalling": journalling,
            "ready_while_full": while_full.detail,
            "ready_while_full_healthy": while_full.healthy,
            "dropped_when_sampled": dropped_then,
            "space_noticed": freed,
            "ready_after_space_returned": after_space,
            "ready_after": after,
        },
    )


def camera_rows(camera: Camera) -> int:
    return len(camera.keys) * ROWS_PER_FRAME


async def _until_rows_stored(dsn: str, rows: int, timeout_s: float) -> float:
    """Seconds until PostgreSQL holds at least ``rows`` rows (events and detections)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            events, _, detections = await stored_events(dsn)
            if events + detections >= rows:
                return time.monotonic() - start
        await asyncio.sleep(0.1)
    return float("inf")


if __name__ == "__main__":
    print(asyncio.run(journal_disk_full(3.0)).line())
