"""The engine cache on a shared directory: atomic, locked, self-healing, size-capped.

Most tests drive ``EngineCache`` with small byte artifacts (the cache does not care
what an artifact is), the rest with real engines in real processes.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
import torch

from its_runtime import config
from its_runtime.engine import Engine, compiled, keys
from its_runtime.engine import cache as cache_mod
from its_runtime.kits import coldstart

from .conftest import ModelConfigFactory

MIB = 1024 * 1024


def _key(name: str) -> keys.EngineKey:
    return keys.EngineKey({"model_sha256": name, "backend": "test"})


def _cache(directory: pathlib.Path, max_bytes: int = 64 * MIB) -> cache_mod.EngineCache:
    return cache_mod.EngineCache(config.EngineCacheConfig(dir=str(directory), max_bytes=max_bytes))


def _writer(payload: bytes, calls: list[str] | None = None):  # type: ignore[no-untyped-def]
    def build(path: pathlib.Path) -> None:
        if calls is not None:
            calls.append("build")
        path.write_bytes(payload)

    return build


def _read(path: pathlib.Path) -> bytes:
    return path.read_bytes()


def test_first_lookup_builds_and_the_next_loads_without_building(tmp_path: pathlib.Path) -> None:
    calls: list[str] = []
    first = _cache(tmp_path)
    assert first.get_or_build(_key("a"), ".bin", _writer(b"engine", calls), _read) == b"engine"

    second = _cache(tmp_path)  # a new process would see the same directory
    assert second.get_or_build(_key("a"), ".bin", _writer(b"other", calls), _read) == b"engine"

    assert calls == ["build"]
    assert first.stats.as_dict() == {
        **cache_mod.EngineCacheStats().as_dict(),
        "misses": 1,
        "builds": 1,
    }
    assert second.stats.hits == 1
    assert second.stats.builds == 0
    manifest = json.loads((tmp_path / f"{_key('a').digest}.json").read_text())
    assert manifest["key"] == {"model_sha256": "a", "backend": "test"}
    assert manifest["size"] == len(b"engine")
    assert not list(tmp_path.glob(".tmp-*"))  # nothing half-written left behind


def test_corrupted_artifact_is_detected_and_rebuilt(tmp_path: pathlib.Path) -> None:
    cache = _cache(tmp_path)
    cache.get_or_build(_key("a"), ".bin", _writer(b"engine-bytes"), _read)
    artifact = tmp_path / f"{_key('a').digest}.bin"
    artifact.write_bytes(b"engine-bytez")  # same size, different content

    assert cache.get_or_build(_key("a"), ".bin", _writer(b"engine-bytes"), _read) == b"engine-bytes"
    assert cache.stats.corrupt_rebuilds == 1
    assert cache.stats.builds == 2


def test_corrupted_manifest_is_rebuilt_not_a_crash(tmp_path: pathlib.Path) -> None:
    cache = _cache(tmp_path)
    cache.get_or_build(_key("a"), ".bin", _writer(b"engine"), _read)
    (tmp_path / f"{_key('a').digest}.json").write_text("{not json")

    assert cache.get_or_build(_key("a"), ".bin", _writer(b"engine"), _read) == b"engine"
    assert cache.stats.corrupt_rebuilds == 1


def test_entry_that_fails_to_load_is_rebuilt(tmp_path: pathlib.Path) -> None:
    """Checksum fine, but the engine is unusable here (e.g. built for another GPU)."""
    cache = _cache(tmp_path)
    cache.get_or_build(_key("a"), ".bin", _writer(b"incompatible"), _read)

    def load(path: pathlib.Path) -> bytes:
        data = path.read_bytes()
        if data == b"incompatible":
            raise RuntimeError("engine plan file is generated on an incompatible device")
        return data

    assert cache.get_or_build(_key("a"), ".bin", _writer(b"good"), load) == b"good"
    assert cache.stats.corrupt_rebuilds == 1


def test_failed_build_leaves_no_entry_and_no_temp_file(tmp_path: pathlib.Path) -> None:
    cache = _cache(tmp_path)

    def broken(path: pathlib.Path) -> None:
        path.write_bytes(b"half")
        raise RuntimeError("compiler crashed")

    with pytest.raises(RuntimeError, match="compiler crashed"):
        cache.get_or_build(_key("a"), ".bin", broken, _read)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".locks"]


def test_leftovers_of_a_crashed_builder_are_cleaned(tmp_path: pathlib.Path) -> None:
    cache = _cache(tmp_path)
    leftover = tmp_path / f".tmp-{_key('a').digest}-dead.bin"
    leftover.write_bytes(b"x" * 100)
    cache.get_or_build(_key("a"), ".bin", _writer(b"engine"), _read)
    assert not leftover.exists()


def test_lru_eviction_keeps_the_cache_under_its_cap(tmp_path: pathlib.Path) -> None:
    cache = _cache(tmp_path, max_bytes=1 * MIB)
    blob = b"x" * (400 * 1024)
    cache.get_or_build(_key("a"), ".bin", _writer(blob), _read)
    cache.get_or_build(_key("b"), ".bin", _writer(blob), _read)
    cache.get_or_build(_key("a"), ".bin", _writer(blob), _read)  # a is now more recent than b
    cache.get_or_build(_key("c"), ".bin", _writer(blob), _read)  # 1.2 MiB: one must go

    present = {m.key["model_sha256"] for m in cache.manifests()}
    assert present == {"a", "c"}
    assert cache.stats.evictions == 1
    assert cache.total_bytes() <= 1 * MIB


def test_eviction_skips_an_entry_another_process_holds(tmp_path: pathlib.Path) -> None:
    cache = _cache(tmp_path, max_bytes=1 * MIB)
    blob = b"x" * (400 * 1024)
    cache.get_or_build(_key("old"), ".bin", _writer(blob), _read)
    cache.get_or_build(_key("mid"), ".bin", _writer(blob), _read)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import fcntl, sys, time
                f = open(sys.argv[1], "w")
                fcntl.flock(f, fcntl.LOCK_EX)
                print("locked", flush=True)
                time.sleep(60)
                """
            ),
            str(cache.lock_path(_key("old").digest)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        cache.get_or_build(_key("new"), ".bin", _writer(blob), _read)
    finally:
        holder.kill()
        holder.communicate()  # reaps it and closes its pipe

    present = {m.key["model_sha256"] for m in cache.manifests()}
    assert present == {"old", "new"}  # "mid" went although "old" was least recently used


def test_unwritable_cache_dir_falls_back_to_a_private_dir(tmp_path: pathlib.Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cache = _cache(blocker / "cache")
    assert cache.disabled_reason is not None
    assert "not writable" in cache.disabled_reason
    assert cache.get_or_build(_key("a"), ".bin", _writer(b"engine"), _read) == b"engine"


def test_inductor_cache_goes_on_the_volume_unless_set(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = _cache(tmp_path / "volume")
    device = keys.device_identity(torch.device("cpu"))
    monkeypatch.setenv(compiled.INDUCTOR_ENV, "/somewhere/else")
    assert compiled.share_inductor_cache(cache, device) is None

    monkeypatch.delenv(compiled.INDUCTOR_ENV)
    path = compiled.share_inductor_cache(cache, device)
    assert path is not None
    assert path.parent == tmp_path / "volume" / "inductor"
    assert os.environ[compiled.INDUCTOR_ENV] == str(path)
    # The same device and torch version share one directory across pods.
    monkeypatch.delenv(compiled.INDUCTOR_ENV)
    assert compiled.share_inductor_cache(_cache(tmp_path / "volume"), device) == path


@pytest.mark.slow
def test_a_corrupted_engine_is_rebuilt_and_serves(
    exported_path: pathlib.Path,
    model_config: ModelConfigFactory,
    warm_cache_config: config.EngineCacheConfig,
) -> None:
    (package,) = pathlib.Path(warm_cache_config.dir).glob("*.pt2")
    package.write_bytes(package.read_bytes()[: package.stat().st_size // 2])  # a torn write

    engine = Engine.load(model_config(exported_path), warm_cache_config, config.GpuConfig())
    engine.warmup()

    assert engine.backend == "aotinductor"
    assert engine.cache_stats.corrupt_rebuilds == 1
    assert engine.cache_stats.builds == 1
    assert len(engine.run_batch(torch.rand(2, 3, 64, 64))) == 2


@pytest.mark.slow
def test_processes_sharing_a_cache_dir_build_once_and_later_starts_are_warm(
    exported_path: pathlib.Path, model_config: ModelConfigFactory, tmp_path: pathlib.Path
) -> None:
    cfg = model_config(exported_path).model_dump_json()  # auto: aotinductor on CPU
    cache_dir = tmp_path / "volume"
    procs = [coldstart.run_child(cfg, cache_dir) for _ in range(2)]
    first = [coldstart.child_report(p) for p in procs]
    warm = coldstart.child_report(coldstart.run_child(cfg, cache_dir))

    # Two pods started together on an empty volume: one builds, the other waits and loads.
    assert sorted(r["cache"]["builds"] for r in first) == [0, 1]
    assert sorted(r["cache"]["hits"] for r in first) == [0, 1]
    assert all(r["backend"] == "aotinductor" and r["frames"] == 1 for r in first)
    assert len(list(cache_dir.glob("*.pt2"))) == 1
    # A pod started later loads the build: no rebuild, and ready sooner.
    cold = next(r for r in first if r["cache"]["builds"] == 1)
    print(f"\ncold start to ready {cold['ready_s']:.2f}s, warm {warm['ready_s']:.2f}s")
    assert warm["cache"]["builds"] == 0
    assert warm["cache"]["hits"] == 1
    assert warm["origin"] == "cache"
    assert warm["load_s"] < cold["load_s"] / 3
    assert warm["ready_s"] < cold["ready_s"]
