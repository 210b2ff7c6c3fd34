"""GPU memory settings reach the allocator; batch buffers are allocated once."""

from __future__ import annotations

import pytest
import torch

from its_runtime import config
from its_runtime.engine import spec as spec_mod
from its_runtime.engine import staging


@pytest.fixture
def clean_alloc_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.skipif(staging.cuda_initialized(), reason="CUDA already initialised")
def test_allocator_settings_are_put_in_the_environment_before_cuda_starts(
    clean_alloc_env: pytest.MonkeyPatch,
) -> None:
    staging.configure_allocator(config.GpuConfig(expandable_segments=True, max_split_size_mb=128))
    import os

    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True,max_split_size_mb:128"


@pytest.mark.skipif(staging.cuda_initialized(), reason="CUDA already initialised")
def test_values_already_set_by_the_user_win(clean_alloc_env: pytest.MonkeyPatch) -> None:
    import os

    clean_alloc_env.setenv("PYTORCH_ALLOC_CONF", "expandable_segments:False")
    staging.configure_allocator(config.GpuConfig(expandable_segments=True, max_split_size_mb=64))
    assert os.environ["PYTORCH_ALLOC_CONF"] == "expandable_segments:False,max_split_size_mb:64"
    assert "PYTORCH_CUDA_ALLOC_CONF" not in os.environ


def test_batches_are_padded_into_one_reused_buffer() -> None:
    spec = spec_mod.InputSpec(3, 8, 8, max_batch=4, opt_batch=2, buckets=(1, 2, 4))
    stager = staging.BatchStager(spec, torch.device("cpu"), torch.float32)
    a = stager.stage(torch.ones(3, 3, 8, 8), 4)
    b = stager.stage(torch.full((1, 3, 8, 8), 2.0), 2)

    assert a.shape == (4, 3, 8, 8)
    assert b.shape == (2, 3, 8, 8)
    assert a.data_ptr() == b.data_ptr()  # the same memory, no per-batch allocation
    assert float(b[0].min()) == 2.0


def test_a_batch_that_needs_no_padding_is_not_copied() -> None:
    spec = spec_mod.InputSpec(3, 8, 8, max_batch=4, opt_batch=2, buckets=(1, 2, 4))
    stager = staging.BatchStager(spec, torch.device("cpu"), torch.float32)
    batch = torch.rand(2, 3, 8, 8)
    assert stager.stage(batch, 2).data_ptr() == batch.data_ptr()


def test_buckets_are_powers_of_two_plus_configured_sizes() -> None:
    assert spec_mod.batch_buckets(8) == (1, 2, 4, 8)
    assert spec_mod.batch_buckets(12, [6, 3, 20]) == (1, 2, 3, 4, 6, 8, 12)
    spec = spec_mod.InputSpec(3, 8, 8, max_batch=12, opt_batch=6, buckets=(1, 2, 4, 8, 12))
    assert [spec.bucket_for(n) for n in (1, 3, 5, 9, 12)] == [1, 4, 8, 12, 12]
    with pytest.raises(ValueError, match=r"outside 1\.\.12"):
        spec.bucket_for(13)


def test_collated_batches_reuse_the_engines_own_buffer() -> None:
    spec = spec_mod.InputSpec(3, 8, 8, max_batch=4, opt_batch=2, buckets=(1, 2, 4))
    stager = staging.BatchStager(spec, torch.device("cpu"), torch.float32)
    assert stager.slots == 1  # CPU: stage and run one batch at a time
    a = stager.collate([torch.ones(3, 8, 8), torch.zeros(3, 8, 8)])
    b = stager.collate([torch.full((3, 8, 8), 2.0)] * 3)
    assert a.shape == (2, 3, 8, 8)
    assert b.shape == (3, 3, 8, 8)
    assert a.data_ptr() == b.data_ptr()  # one buffer, allocated once
    assert float(b.min()) == 2.0
    padded = stager.stage(b, 4)
    assert padded.shape == (4, 3, 8, 8)
    assert float(padded[:3].min()) == 2.0
    with pytest.raises(ValueError, match=r"outside 1\.\.4"):
        stager.collate([torch.ones(3, 8, 8)] * 5)


def test_a_lone_cpu_frame_is_batched_without_a_copy() -> None:
    # An idle server's frame goes alone: copying it into the batch buffer is pure
    # overhead (a 320x320 float frame is 1.2 MB) on the path whose latency is quoted.
    spec = spec_mod.InputSpec(3, 8, 8, max_batch=4, opt_batch=2, buckets=(1, 2, 4))
    stager = staging.BatchStager(spec, torch.device("cpu"), torch.float32)
    frame = torch.rand(3, 8, 8)
    batch = stager.collate([frame])
    assert batch.shape == (1, 3, 8, 8)
    assert batch.data_ptr() == frame.data_ptr()
    assert stager.stage(batch, 1).data_ptr() == frame.data_ptr()
    assert torch.equal(stager.stage(batch, 2)[0], frame)  # padded into the buffer
    # A frame of another dtype, or not contiguous, still goes through the buffer.
    odd = torch.rand(3, 8, 16)[:, :, ::2]
    assert stager.collate([odd]).data_ptr() != odd.data_ptr()
    assert torch.equal(stager.collate([odd])[0], odd)
