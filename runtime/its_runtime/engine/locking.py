"""A cross-process lock per cache key, so N pods build one engine once.

``fcntl.flock`` on a lock file beside the cache entries: every process that wants an
entry takes the key's lock, finds the entry or builds it, and releases; the others
block meanwhile and then find it built. The kernel drops the lock when a holder dies,
so a crashed builder never wedges the rest. On NFS (a typical ReadWriteMany volume)
Linux emulates ``flock`` with POSIX byte-range locks, which are per process rather
than per open file, so a process-local lock is taken first to keep threads of one
process apart as well.

Waiting polls a non-blocking ``flock`` instead of blocking in the kernel, so that a
``timeout`` can be honoured and the waiter can log that it is waiting on another
builder (a first TensorRT build can take minutes).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pathlib
import threading
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)

_local_locks: dict[str, threading.Lock] = {}
_local_guard = threading.Lock()


class LockTimeoutError(TimeoutError):
    """Another process held the lock for longer than the caller would wait."""


def _local_lock(path: pathlib.Path) -> threading.Lock:
    key = os.path.realpath(path)
    with _local_guard:
        return _local_locks.setdefault(key, threading.Lock())


@contextlib.contextmanager
def exclusive(
    path: pathlib.Path, timeout: float | None = None, poll_s: float = 0.05
) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block's duration."""
    local = _local_lock(path)
    deadline = None if timeout is None else time.monotonic() + timeout
    if not local.acquire(timeout=-1 if timeout is None else timeout):
        raise LockTimeoutError(f"timed out after {timeout}s waiting for lock {path}")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            _acquire(fd, path, deadline, poll_s)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    finally:
        local.release()


def _acquire(fd: int, path: pathlib.Path, deadline: float | None, poll_s: float) -> None:
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if not announced:
            log.info("waiting for lock %s (another process is building this engine)", path)
            announced = True
        if deadline is not None and time.monotonic() >= deadline:
            raise LockTimeoutError(f"timed out waiting for lock {path}")
        time.sleep(poll_s)


@contextlib.contextmanager
def try_exclusive(path: pathlib.Path) -> Iterator[bool]:
    """Take the lock only if it is free at once; yields whether it was taken."""
    local = _local_lock(path)
    if not local.acquire(blocking=False):
        yield False
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    finally:
        local.release()
