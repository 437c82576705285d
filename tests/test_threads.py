"""The engine's thread cap: one torch CPU thread for the small products of a training step, unchanged otherwise."""

from __future__ import annotations

import pytest
import torch
from conftest import synthetic_config, synthetic_dataset

from lapmusic.core.device import SMALL_STEP, engine_threads, threads_kept
from lapmusic.training.train import train


@pytest.fixture
def two_threads():
    with threads_kept():
        torch.set_num_threads(2)
        yield


@pytest.mark.usefixtures("two_threads")
def test_a_small_cpu_run_uses_one_thread():
    assert engine_threads(torch.device("cpu"), 128, 32) == 1
    assert torch.get_num_threads() == 1


@pytest.mark.usefixtures("two_threads")
def test_the_cap_ends_at_small_step():
    # 32 x 1024 x 1024 is SMALL_STEP exactly: still one thread; one more row of the batch is above it.
    assert 32 * 1024 * 1024 == SMALL_STEP
    assert engine_threads(torch.device("cpu"), 1024, 32) == 1
    torch.set_num_threads(2)
    assert engine_threads(torch.device("cpu"), 1024, 33) == 2
    assert torch.get_num_threads() == 2


@pytest.mark.usefixtures("two_threads")
def test_a_cuda_run_keeps_the_cpu_threads():
    assert engine_threads(torch.device("cuda"), 16, 4) == 2  # only the type is read: no GPU needed
    assert torch.get_num_threads() == 2


@pytest.mark.usefixtures("two_threads")
def test_train_applies_the_cap_and_gives_the_threads_back(tmp_path):
    dataset = synthetic_dataset((8, 3, 3), (10, 20))
    seen = []
    train(synthetic_config(hidden=8, init="random", epochs=1), tmp_path / "run", dataset=dataset,
          progress=lambda fraction, message: seen.append(torch.get_num_threads()))
    assert seen[-1] == 1  # the last report comes from inside the run
    assert torch.get_num_threads() == 2


@pytest.mark.usefixtures("two_threads")
def test_threads_kept_restores_after_an_error():
    with pytest.raises(ValueError), threads_kept():
        torch.set_num_threads(1)
        raise ValueError
    assert torch.get_num_threads() == 2
