"""freeze_recurrent_epochs: the first epochs train the output layer only, the recurrent layer as initialised."""

from __future__ import annotations

import pytest
import torch
from conftest import synthetic_config, synthetic_dataset

from lapmusic.core.errors import LapMusicError
from lapmusic.training.rundir import load_checkpoint
from lapmusic.training.train import train


@pytest.fixture(scope="module")
def dataset():
    return synthetic_dataset((24, 6, 6), (10, 40))


def small_config(**fields):
    return synthetic_config(**{"hidden": 12, "init": "random", "epochs": 4, **fields})


def _weights(path):
    return load_checkpoint(path, torch.device("cpu"))["model"]


def test_frozen_epochs_change_the_head_only_then_everything(tmp_path, dataset):
    run = tmp_path / "run"
    train(small_config(epochs=2, freeze_recurrent_epochs=2, patience=None), run, dataset=dataset)
    frozen = _weights(run / "checkpoint.pt")
    fresh = tmp_path / "fresh"
    train(small_config(epochs=1, freeze_recurrent_epochs=100, patience=None), fresh, dataset=dataset)  # head only
    start = _weights(fresh / "checkpoint.pt")
    recurrent = [name for name in frozen if name.startswith("recurrent.")]
    head = [name for name in frozen if name.startswith("head.")]
    assert recurrent and head
    for name in recurrent:
        assert torch.equal(frozen[name], start[name]), name
    assert any(not torch.equal(frozen[name], start[name]) for name in head)

    train(small_config(epochs=3, freeze_recurrent_epochs=2, patience=None), tmp_path / "later", dataset=dataset)
    later = _weights(tmp_path / "later" / "checkpoint.pt")
    assert any(not torch.equal(later[name], frozen[name]) for name in recurrent)  # epoch 3 trains it


def test_a_negative_freeze_is_refused():
    with pytest.raises(LapMusicError, match="freeze_recurrent_epochs"):
        small_config(freeze_recurrent_epochs=-1).validate()
