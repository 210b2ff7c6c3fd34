"""The engine cache on the mounted volume: build once, load everywhere, never crash.

Layout, flat in the configured directory (a ReadWriteMany PVC shared by all pods)::

    <digest>.<suffix>      the artifact (an AOTInductor package, a TensorRT program, ...)
    <digest>.json          its manifest: key fields, size, sha256, build time, last access
    .locks/<digest>.lock   the per-key cross-process lock

Why so:

* A pod takes the key's lock, then either finds a valid entry and loads it, or builds
  one. The others block on the lock meanwhile and then find the entry: N pods build
  once. The lock is held while loading too, so eviction (which takes the same lock
  without waiting) never deletes an entry that someone is reading.
* Writes are atomic: the artifact is written to a temporary name in the same
  directory and ``os.replace``-d into place, then the manifest likewise. The manifest
  is written last, so it is the commit marker: an artifact without one is a crashed
  build and is simply built again.
* Every load checks the artifact's size and sha256 against its manifest, and a load
  that fails anyway (a truncated file, an engine from an incompatible device or
  version) deletes the entry and rebuilds it: a bad entry costs a rebuild, never a
  crash loop.
* The size cap is enforced after each build by evicting the least recently used
  entries (``last_access`` in the manifest, refreshed on each hit), skipping any entry
  that another process holds.
* If the directory cannot be written (read-only or missing volume), engines are built
  into a private temporary directory instead, and the reason is logged and kept in
  ``disabled_reason``: the pod still starts, it just does not share its builds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from its_runtime import config
from its_runtime.engine import keys, locking

log = logging.getLogger(__name__)

T = TypeVar("T")

MANIFEST_SCHEMA = 1
_LOCK_DIR = ".locks"
_TMP_PREFIX = ".tmp-"


@dataclass
class EngineCacheStats:
    """Plain counters; the server's metrics module exports them.

    ``misses`` counts every lookup that found no usable entry, so it includes the
    ``corrupt_rebuilds`` (entries found but unusable); ``builds`` counts builds that
    were committed to the cache.
    """

    hits: int = 0
    misses: int = 0
    builds: int = 0
    evictions: int = 0
    corrupt_rebuilds: int = 0
    #: Builds that raised (the engine then fell back to the next backend).
    build_failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Manifest:
    digest: str
    artifact: str
    size: int
    sha256: str
    created: float
    last_access: float
    build_seconds: float
    key: dict[str, str]

    def to_json(self) -> str:
        return json.dumps({"schema": MANIFEST_SCHEMA, **dataclasses.asdict(self)}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data: Any = json.loads(text)
        if not isinstance(data, dict) or data.get("schema") != MANIFEST_SCHEMA:
            raise ValueError("not a manifest of this schema")
        data.pop("schema")
        return cls(**data)


class EngineCache:
    """A directory of compiled engines shared by processes; see the module docstring."""

    def __init__(self, cfg: config.EngineCacheConfig, lock_timeout_s: float | None = None) -> None:
        self.max_bytes = cfg.max_bytes
        self.lock_timeout_s = lock_timeout_s
        self.stats = EngineCacheStats()
        self.disabled_reason: str | None = None
        self.dir = pathlib.Path(cfg.dir)
        try:
            (self.dir / _LOCK_DIR).mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.dir, prefix=_TMP_PREFIX):
                pass
        except OSError as exc:
            self.disabled_reason = f"engine cache dir {self.dir} is not writable: {exc}"
            self.dir = pathlib.Path(tempfile.mkdtemp(prefix="its-engine-cache-"))
            (self.dir / _LOCK_DIR).mkdir()
            log.warning("%s; building into private %s (not shared)", self.disabled_reason, self.dir)

    # -- paths ---------------------------------------------------------------

    def artifact_path(self, digest: str, suffix: str) -> pathlib.Path:
        return self.dir / f"{digest}{suffix}"

    def manifest_path(self, digest: str) -> pathlib.Path:
        return self.dir / f"{digest}.json"

    def lock_path(self, digest: str) -> pathlib.Path:
        return self.dir / _LOCK_DIR / f"{digest}.lock"

    # -- the one operation ---------------------------------------------------

    def get_or_build(
        self,
        key: keys.EngineKey,
        suffix: str,
        build: Callable[[pathlib.Path], None],
        load: Callable[[pathlib.Path], T],
    ) -> T:
        """Load the entry for ``key``, building it first if absent or unusable.

        ``build(path)`` must write the artifact to ``path``; ``load(path)`` turns it
        into a runnable object and raises if it cannot. Exceptions from ``build`` and
        from loading a freshly built artifact propagate (the backend has failed).
        """
        digest = key.digest
        with locking.exclusive(self.lock_path(digest), timeout=self.lock_timeout_s):
            self._remove_temporaries(digest)
            found = self._load_existing(digest, load)
            if found is not None:
                return found[0]
            self.stats.misses += 1
            result = self._build(key, suffix, build, load)
        self.evict(keep=digest)
        return result

    def _load_existing(self, digest: str, load: Callable[[pathlib.Path], T]) -> tuple[T] | None:
        mpath = self.manifest_path(digest)
        if not mpath.exists():
            return None
        try:
            manifest = Manifest.from_json(mpath.read_text(encoding="utf-8"))
            artifact = self.dir / manifest.artifact
            problem = _verify(artifact, manifest)
            if problem is None:
                started = time.monotonic()
                loaded = load(artifact)
                log.info(
                    "engine cache hit %s (%s, %.2fs to load)",
                    digest[:16],
                    manifest.artifact,
                    time.monotonic() - started,
                )
                self.stats.hits += 1
                self._write_manifest(dataclasses.replace(manifest, last_access=time.time()))
                return (loaded,)
        except Exception as exc:  # any failure to read or load is a bad entry, not a crash
            problem = f"{type(exc).__name__}: {exc}"
        log.warning("engine cache entry %s is unusable (%s); rebuilding", digest[:16], problem)
        self.stats.corrupt_rebuilds += 1
        self._remove_entry(digest)
        return None

    def _build(
        self,
        key: keys.EngineKey,
        suffix: str,
        build: Callable[[pathlib.Path], None],
        load: Callable[[pathlib.Path], T],
    ) -> T:
        digest = key.digest
        fd, tmp_name = tempfile.mkstemp(
            dir=self.dir, prefix=f"{_TMP_PREFIX}{digest}-", suffix=suffix
        )
        os.close(fd)
        tmp = pathlib.Path(tmp_name)
        started = time.monotonic()
        try:
            log.info("building engine %s (%s)", digest[:16], key.fields.get("backend"))
            build(tmp)
            build_seconds = time.monotonic() - started
            _fsync(tmp)
            size, sha = _size_and_sha256(tmp)
            final = self.artifact_path(digest, suffix)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        now = time.time()
        self._write_manifest(
            Manifest(
                digest=digest,
                artifact=final.name,
                size=size,
                sha256=sha,
                created=now,
                last_access=now,
                build_seconds=round(build_seconds, 3),
                key=dict(key.fields),
            )
        )
        self.stats.builds += 1
        log.info("built engine %s in %.1fs (%d bytes)", digest[:16], build_seconds, size)
        try:
            return load(final)
        except Exception:
            self._remove_entry(digest)
            raise

    # -- bookkeeping ---------------------------------------------------------

    def _write_manifest(self, manifest: Manifest) -> None:
        fd, tmp_name = tempfile.mkstemp(
            dir=self.dir, prefix=f"{_TMP_PREFIX}{manifest.digest}-", suffix=".json"
        )
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(manifest.to_json())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_name, self.manifest_path(manifest.digest))
        finally:
            pathlib.Path(tmp_name).unlink(missing_ok=True)

    def _remove_entry(self, digest: str) -> None:
        self.manifest_path(digest).unlink(missing_ok=True)
        for path in self.dir.glob(f"{digest}*"):
            path.unlink(missing_ok=True)

    def _remove_temporaries(self, digest: str) -> None:
        """Leftovers of a builder that died while holding this key's lock."""
        for path in self.dir.glob(f"{_TMP_PREFIX}{digest}-*"):
            path.unlink(missing_ok=True)

    def manifests(self) -> list[Manifest]:
        out = []
        for path in self.dir.glob("*.json"):
            with contextlib.suppress(Exception):
                out.append(Manifest.from_json(path.read_text(encoding="utf-8")))
        return out

    def total_bytes(self) -> int:
        return sum(
            p.stat().st_size
            for p in self.dir.iterdir()
            if p.is_file() and not p.name.startswith(_TMP_PREFIX)
        )

    def evict(self, keep: str | None = None) -> int:
        """Delete least recently used entries until the cache fits ``max_bytes``.

        Entries whose lock another process holds (being loaded or built) are skipped,
        as is ``keep`` (the entry just used). Returns how many entries were deleted.
        """
        evicted = 0
        with locking.exclusive(self.dir / _LOCK_DIR / "evict.lock", timeout=self.lock_timeout_s):
            total = self.total_bytes()
            if total <= self.max_bytes:
                return 0
            for manifest in sorted(self.manifests(), key=lambda m: m.last_access):
                if total <= self.max_bytes:
                    break
                if manifest.digest == keep:
                    continue
                with locking.try_exclusive(self.lock_path(manifest.digest)) as taken:
                    if not taken:
                        continue
                    freed = sum(p.stat().st_size for p in self.dir.glob(f"{manifest.digest}*"))
                    # The lock file stays: unlinking it would let a waiter that opened
                    # the old inode and a newcomer that creates a new one both "hold" it.
                    self._remove_entry(manifest.digest)
                total -= freed
                evicted += 1
                self.stats.evictions += 1
                log.info("evicted engine %s (%d bytes, LRU)", manifest.digest[:16], freed)
            if total > self.max_bytes:
                log.warning(
                    "engine cache holds %d bytes, over its %d cap, after evicting what it could",
                    total,
                    self.max_bytes,
                )
        return evicted


def _verify(artifact: pathlib.Path, manifest: Manifest) -> str | None:
    if not artifact.is_file():
        return f"artifact {artifact.name} is missing"
    size, sha = _size_and_sha256(artifact)
    if size != manifest.size:
        return f"artifact is {size} bytes, manifest says {manifest.size}"
    if sha != manifest.sha256:
        return "artifact checksum does not match its manifest"
    return None


def _size_and_sha256(path: pathlib.Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def _fsync(path: pathlib.Path) -> None:
    with path.open("rb+") as f:
        os.fsync(f.fileno())
