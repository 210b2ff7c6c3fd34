"""The shared journal root: one journal per pod, and adopting those of pods gone.

**Layout.** Every replica of a pipeline mounts one shared volume (a ReadWriteMany
claim) at ``database.journalDir``, the *root*, and keeps its own journal in
``<root>/<pod>/`` (:func:`pod_journal`). The pod name comes from ``POD_NAME`` (the
downward API); a process outside Kubernetes uses its host name (:func:`owner_name`).
Pod names are used as they are when they are safe directory names (every Kubernetes
pod name is) and replaced by a sanitized name plus a hash otherwise
(:func:`pod_directory_name`). If the pod's directory is locked by another process
(its container restarted inside the same pod while a sibling adopts the old
journal), the process takes ``<pod>~1``, ``<pod>~2``, ... instead: ``~`` never occurs
in a pod name. Segments lying directly in the root are the older single-journal
layout, adopted like an orphan.

**Orphans.** A pod deleted while the database was down leaves its directory behind
with the rows it could not write. Pod names in a Deployment are never reused, so
nobody would ever open it again: it is an *orphan*, and a surviving (or the
replacement) pod adopts it.

The protocol, run by the row writer of every live pod:

* **When.** Only while the database is up, after the pod's own journal is empty: at
  start and then at most every ``scan_interval_s`` (a few seconds) per writer turn,
  and again at once after an adopted journal was finished.
* **Candidates.** Every directory directly under the root except the pod's own, plus
  the root itself when segments lie directly in it (the older single-journal
  layout). A directory without segments is only cleaned up once it has not changed
  for ``settle_s`` (a pod that is just creating its journal is left alone).
* **Who wins.** The adopter opens the candidate's journal, which takes its lock
  file with ``flock(LOCK_EX | LOCK_NB)``. A live owner holds that lock (a stopped,
  ``SIGSTOP``-ed owner too), so a live pod's journal is never touched; the kernel
  drops the lock of a process that died however it died (``kill -9`` included), so
  exactly one adopter gets it. Others skip the directory until their next scan.
* **Replay.** The adopter replays the orphan's segments oldest first through the
  same idempotent write path as its own (binary COPY, merge ``ON CONFLICT (key) DO
  NOTHING``): a row replayed twice (the adopter died after a commit, before it
  deleted the segment) is still stored once. A segment is deleted only after all of
  its records are in the database. If the database goes away mid-replay the rest
  stays, still locked by the adopter, and the replay continues when it is back; if
  the adopter stops (or dies) the lock goes and another pod adopts what is left.
* **Losses are counted, never silent.** A damaged record (torn tail, bad checksum,
  undecodable payload) costs only its own rows; they are counted as dropped
  (``reason="corrupt"``) and logged, and the rest of the journal is replayed.
* **Cleanup.** An adopted journal with nothing left is deleted with its directory,
  its lock file unlinked while still locked (a late opener notices that the lock
  file it holds is no longer the one at the path and retries). The root of the old
  layout keeps its directory and lock file; only its segments go.

The shared file system must honour ``flock`` across nodes and release a dead
holder's locks (CephFS does; so does NFSv4, where Linux maps ``flock`` to a
whole-file lock that the server frees when a lost client's lease expires). Sizing:
the claim holds up to one full journal (``journalMaxBytes``) per replica.

The class is synchronous (file I/O only); the writer calls it from a worker thread,
never concurrently, and counts rows itself.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import re
import socket
import time
from collections.abc import Callable, Mapping

from its_runtime.config import POD_NAME_ENV
from its_runtime.dataplane.store.journal import (
    LOCK_NAME,
    SUFFIX,
    Journal,
    JournalLockedError,
    segment_files,
)

log = logging.getLogger(__name__)

#: Separates a pod's name from the number of a fallback directory (never in a pod name).
FALLBACK_SEPARATOR = "~"
_FALLBACKS = 16
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
#: The cap given to an adopted journal; it is only replayed, never appended to.
_ADOPTED_MAX_BYTES = 1 << 62


def owner_name(environ: Mapping[str, str] | None = None) -> str:
    """This process's journal owner: the pod name (``POD_NAME``), else the host name."""
    env = os.environ if environ is None else environ
    return env.get(POD_NAME_ENV) or socket.gethostname() or "localhost"


def pod_directory_name(pod: str) -> str:
    """A directory name for ``pod``: itself when safe, else a sanitized name plus a hash.

    Safe means letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit,
    at most 200 characters, no ``..``, and not a name the root's own files use
    (``LOCK``, ``*.jnl``). Anything else (a path separator, an empty or very long
    host name) gets a stable substitute that no safe name can collide with.
    """
    if (
        _SAFE_NAME.fullmatch(pod)
        and pod.upper() != LOCK_NAME
        and not pod.endswith(SUFFIX)
        and ".." not in pod
    ):
        return pod
    digest = hashlib.sha256(pod.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", pod).strip("_-")[:64]
    return f"{cleaned or 'pod'}{FALLBACK_SEPARATOR}{digest}"


def pod_journal(
    root: str | pathlib.Path,
    pod: str,
    max_bytes: int,
    *,
    segment_bytes: int | None = None,
    fsync: bool = True,
) -> Journal:
    """The journal of ``pod`` under the shared ``root``: ``<root>/<pod>/``, locked.

    Falls back to ``<pod>~1``, ``<pod>~2``, ... while that directory is locked by
    another process (an adopter replaying this pod's previous journal); raises
    :class:`JournalLockedError` when all of them are.
    """
    base = pod_directory_name(pod)
    names = [base] + [f"{base}{FALLBACK_SEPARATOR}{i}" for i in range(1, _FALLBACKS)]
    for name in names:
        try:
            return Journal(
                pathlib.Path(root) / name, max_bytes, segment_bytes=segment_bytes, fsync=fsync
            )
        except JournalLockedError:
            log.warning("journal directory %s is locked by another process", name)
    raise JournalLockedError(f"every journal directory of pod {pod!r} under {root} is locked")


class Adoption:
    """Finds, locks and finishes the orphaned journals under a shared root."""

    def __init__(
        self,
        root: str | pathlib.Path,
        *,
        own: Journal | pathlib.Path | None = None,
        scan_interval_s: float = 5.0,
        settle_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = pathlib.Path(root)
        own_dir = own.directory if isinstance(own, Journal) else own
        self._own = None if own_dir is None else _resolved(pathlib.Path(own_dir))
        self.scan_interval_s = scan_interval_s
        self.settle_s = settle_s
        self._clock = clock
        self._last_scan: float | None = None
        #: The adopted journal being replayed (its lock held), if any.
        self.current: Journal | None = None
        self.scans = 0
        self.journals_adopted = 0
        self.directories_removed = 0

    @classmethod
    def beside(
        cls, journal: Journal, *, scan_interval_s: float = 5.0, settle_s: float = 60.0
    ) -> Adoption:
        """The adoption of ``journal``'s siblings (its parent is the shared root)."""
        return cls(
            journal.directory.parent,
            own=journal,
            scan_interval_s=scan_interval_s,
            settle_s=settle_s,
        )

    def due(self) -> bool:
        """True when a scan may run now (never scanned, or the interval has passed)."""
        if self.current is not None:
            return True
        return self._last_scan is None or self._clock() - self._last_scan >= self.scan_interval_s

    # -- scanning -------------------------------------------------------------------

    def candidates(self) -> list[pathlib.Path]:
        """Directories that may hold an orphaned journal, the old root layout first."""
        found: list[pathlib.Path] = []
        if segment_files(self.root):
            found.append(self.root)
        try:
            entries = sorted(os.scandir(self.root), key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot list the journal root %s: %s", self.root, exc)
            return found
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            path = pathlib.Path(entry.path)
            if self._own is not None and _resolved(path) == self._own:
                continue
            found.append(path)
        return found

    def adopt_next(self) -> Journal | None:
        """The journal to replay: the current one, else the first orphan this scan locks."""
        if self.current is not None:
            return self.current
        if not self.due():
            return None
        self._last_scan = self._clock()
        self.scans += 1
        for path in self.candidates():
            journal = self.try_adopt(path)
            if journal is None:
                continue
            if journal.empty:
                self._finish(journal)  # nothing to replay: clean up and look further
                continue
            self.current = journal
            self.journals_adopted += 1
            log.warning(
                "adopted the orphaned journal %s: %d rows to replay",
                path,
                journal.rows,
            )
            return journal
        return None

    def try_adopt(self, path: pathlib.Path) -> Journal | None:
        """``path``'s journal, locked by this process; None if live, gone or too new."""
        if not segment_files(path) and path != self.root:
            try:
                age = time.time() - path.stat().st_mtime
            except OSError:
                return None
            if age < self.settle_s:
                return None  # maybe a pod creating its journal right now
        try:
            return Journal(path, _ADOPTED_MAX_BYTES, fsync=False, create=False)
        except JournalLockedError:
            return None  # a live owner (or another adopter) holds it
        except FileNotFoundError:
            return None  # removed by another adopter meanwhile
        except OSError as exc:
            log.error("cannot open the orphaned journal %s (kept for later): %s", path, exc)
            return None

    # -- finishing ------------------------------------------------------------------

    def finish(self) -> None:
        """The current journal is replayed: delete it (and its directory); scan again."""
        journal, self.current = self.current, None
        if journal is not None:
            self._finish(journal)
        self._last_scan = None  # more orphans may be waiting

    def release(self) -> None:
        """Stop replaying the current journal, keeping what is left for a later adopter."""
        journal, self.current = self.current, None
        if journal is not None:
            journal.close()
            log.info(
                "released the adopted journal %s (%d rows left)", journal.directory, journal.rows
            )

    def _finish(self, journal: Journal) -> None:
        is_root = _resolved(journal.directory) == _resolved(self.root)
        try:
            removed = journal.discard(directory=not is_root)
        except OSError as exc:
            journal.close()
            log.warning("cannot remove the adopted journal %s: %s", journal.directory, exc)
            return
        if removed and not is_root:
            self.directories_removed += 1
            log.info("removed the adopted journal directory %s", journal.directory)


def _resolved(path: pathlib.Path) -> pathlib.Path:
    try:
        return path.resolve()
    except OSError:
        return path.absolute()
