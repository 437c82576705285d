"""Input noise (``TrainConfig.input_noise``, ``--input-noise``): the rate it corrupts at, clean targets, clean
evaluation, validation of the setting, reproducible and resumable draws, and ``q = 0`` changing nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import synthetic_config, synthetic_dataset

from lapmusic.cli import main as cli
from lapmusic.cli.options import training_config
from lapmusic.core.errors import LapMusicError
from lapmusic.model.config import ModelConfig
from lapmusic.model.rnn import PianoRollRNN
from lapmusic.training.config import TrainConfig
from lapmusic.training.epoch import corrupt_inputs, key_density, noise_generator, pad_batch, train_epoch
from lapmusic.training.rundir import read_history
from lapmusic.training.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dataset():
    return synthetic_dataset((16, 4, 4), (10, 30))


def small_config(**fields) -> TrainConfig:
    return synthetic_config(**{"hidden": 10, "init": "random", "epochs": 3, **fields})


def test_corruption_drops_notes_at_rate_q_and_keeps_every_keys_frequency():
    # 200 000 frames whose keys are on with known frequencies 0 (never played), 0.02, 0.1 and 0.3.
    generator = torch.Generator().manual_seed(0)
    rho = torch.tensor([0.0, 0.02, 0.1, 0.3]).repeat(22)
    clean = (torch.rand(50, 4000, 88, generator=generator) < rho).float()
    kept = clean.clone()
    q = 0.15
    noisy = corrupt_inputs(clean, q, rho, torch.Generator().manual_seed(1))
    assert torch.equal(clean, kept)  # a copy: the batch (and the targets, a view of it) stay clean
    assert set(noisy.unique().tolist()) <= {0.0, 1.0}
    on, off = clean > 0.5, clean < 0.5
    dropped = float((noisy[on] < 0.5).float().mean())
    n_on = int(on.sum())
    assert abs(dropped - q) < 5 * math.sqrt(q * (1 - q) / n_on)
    for k, r in enumerate(rho[:4].tolist()):
        column_off = off[..., k::4]
        switched = float((noisy[..., k::4][column_off] > 0.5).float().mean())
        expected = q * r / (1 - r)
        assert abs(switched - expected) < 5 * math.sqrt(max(expected * (1 - expected), 1e-12) / int(column_off.sum()))
        if r == 0:
            assert switched == 0.0  # a key the data never plays is never switched on
        # P(on) before = P(on) after: the key keeps its frequency (both measured on the same frames).
        before, after = float(clean[..., k::4].mean()), float(noisy[..., k::4].mean())
        assert abs(after - before) < 5 * math.sqrt(max(r, 1e-12) / clean[..., k::4].numel()) + 1e-12
    # Symmetric flipping would be visibly different: the frames keep their number of notes.
    assert float(noisy.sum(-1).mean()) == pytest.approx(float(clean.sum(-1).mean()), rel=0.01)


def test_rate_zero_returns_the_batch_itself_and_draws_nothing():
    x = torch.zeros(2, 3, 88)
    assert corrupt_inputs(x, 0.0, torch.full((88,), 0.1), None) is x
    assert noise_generator(0.0, 3, 1, torch.device("cpu")) is None


def test_key_density_is_the_share_of_frames_each_key_is_on():
    pieces = [torch.zeros(3, 88, dtype=torch.uint8), torch.zeros(1, 88, dtype=torch.uint8)]
    pieces[0][0, 5] = pieces[0][1, 5] = pieces[1][0, 5] = 1
    pieces[1][0, 7] = 1
    rho = key_density(pieces)
    assert rho[5] == pytest.approx(0.75) and rho[7] == pytest.approx(0.25) and float(rho.sum()) == pytest.approx(1.0)


class _Spy(PianoRollRNN):
    """Records the input and target windows ``train_epoch`` feeds the network."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def frame_nll(self, x, h=None, targets=None, past=None):
        self.seen.append((x.detach().clone(), None if targets is None else targets.detach().clone()))
        return super().frame_nll(x, h, targets=targets, past=past)


def _clean_windows(pieces, batch_size, bptt, seed):
    """The clean (inputs, targets) windows of one epoch, in the order train_epoch forms them."""
    from lapmusic.training.epoch import _active_rows, length_batches

    lengths = [len(p) for p in pieces]
    usable = [i for i, n in enumerate(lengths) if n >= 2]
    windows = []
    for batch in length_batches([lengths[i] for i in usable], batch_size, np.random.default_rng(seed)):
        inputs, targets, mask = pad_batch([pieces[usable[i]] for i in batch])
        for start in range(0, inputs.shape[1], bptt):
            rows = _active_rows(mask, start)
            windows.append((inputs[:rows, start:start + bptt], targets[:rows, start:start + bptt]))
    return windows


@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_training_batches_get_noisy_inputs_and_clean_targets(dataset, rate):
    pieces = [torch.as_tensor(p) for p in dataset.train]
    copies = [p.clone() for p in pieces]
    torch.manual_seed(0)
    model = _Spy.from_config(ModelConfig(8))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    generator = noise_generator(rate, 3, 1, torch.device("cpu"))
    train_epoch(model, optimizer, pieces, batch_size=4, bptt=7, clip=None, rng=np.random.default_rng(5),
                input_noise=rate, density=key_density(pieces), noise_generator=generator)
    clean = _clean_windows(pieces, 4, 7, 5)
    assert len(model.seen) == len(clean)
    changed = 0
    for (x, y), (x0, y0) in zip(model.seen, clean):
        assert torch.equal(y, y0)  # the next frames the loss scores are never corrupted
        changed += int((x != x0).sum())
    if rate == 0:
        assert changed == 0  # q = 0: the network sees exactly the batches it saw before the option existed
    else:
        assert changed > 0
    assert all(torch.equal(p, c) for p, c in zip(pieces, copies))  # the training pieces themselves stay clean


def test_noise_changes_training_only_not_evaluation(tmp_path, dataset):
    # SGD with lr 1e-12: the weights stay the initial ones to ~1e-12, so every evaluation must agree to rounding
    # while the training NLL (measured on the noisy batches) differs.
    common = dict(optimizer="sgd", momentum=0.0, lr=1e-12, epochs=2)
    train(small_config(**common), tmp_path / "clean", dataset=dataset)
    final = train(small_config(input_noise=0.3, **common), tmp_path / "noisy", dataset=dataset)
    clean_history, noisy_history = read_history(tmp_path / "clean"), read_history(tmp_path / "noisy")
    for a, b in zip(clean_history, noisy_history):
        assert b["valid_nll"] == pytest.approx(a["valid_nll"], rel=1e-7)
    for a, b in zip(clean_history[1:], noisy_history[1:]):
        assert abs(b["train_nll"] - a["train_nll"]) > 1e-4
    clean_final = train(small_config(**common), tmp_path / "clean", dataset=dataset, resume=True)
    assert final["nll"] == pytest.approx(clean_final["nll"], rel=1e-7)  # test NLL of the best model


def test_noise_is_seeded_resumable_and_leaves_the_dropout_stream_alone(tmp_path, dataset):
    def weights(run):
        return torch.load(tmp_path / run / "checkpoint.pt", weights_only=True)

    settings = dict(input_noise=0.2, dropout=0.2)
    train(small_config(epochs=4, **settings), tmp_path / "whole", dataset=dataset)
    train(small_config(epochs=2, **settings), tmp_path / "split", dataset=dataset)
    train(small_config(epochs=4, **settings), tmp_path / "split", dataset=dataset, resume=True)
    whole, split = weights("whole")["model"], weights("split")["model"]
    for name in whole:  # the same noise after a resume as in one go
        assert torch.equal(whole[name], split[name]), name
    train(small_config(epochs=4, seed=4, **settings), tmp_path / "seed4", dataset=dataset)
    assert not torch.equal(weights("seed4")["model"]["head.readout.weight"], whole["head.readout.weight"])
    # The noise draws from a generator of its own: the global torch stream (dropout's) ends where it would
    # have ended without the noise.
    train(small_config(epochs=4, dropout=0.2), tmp_path / "no-noise", dataset=dataset)
    assert torch.equal(weights("no-noise")["torch_rng"], weights("whole")["torch_rng"])
    assert not torch.equal(weights("no-noise")["model"]["head.readout.weight"], whole["head.readout.weight"])


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), float("inf"), True, "0.1", None])
def test_out_of_range_noise_is_refused(bad):
    with pytest.raises(LapMusicError, match="input_noise must be a number in"):
        small_config(input_noise=bad).validate()


def test_config_json_without_the_key_means_no_noise_and_the_cli_passes_it(tmp_path, capsys):
    data = small_config().to_dict()
    del data["input_noise"]  # a run folder written before the option existed
    assert TrainConfig.from_dict(data).input_noise == 0.0
    for good in (0.0, 0.5, 0.999):
        small_config(input_noise=good).validate()
    args = cli.build_parser().parse_args(["train", "--dataset", "synthetic", "--hidden", "4", "--input-noise", "0.1",
                                          "--out", str(tmp_path / "r")])
    assert training_config(args, dataset="synthetic", hidden=4).input_noise == 0.1
    assert cli.main(["train", "--dataset", "bach", "--hidden", "4", "--input-noise", "1", "--out",
                     str(tmp_path / "bad")]) == 2
    assert "--input-noise must be a number in [0, 1)" in capsys.readouterr().err
