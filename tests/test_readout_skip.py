"""The Bernoulli readout's previous-frame skip: logits_t = W_out h_t + c + W_skip x_t (``readout_skip``)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import synthetic_dataset

from lapmusic.cli import main as cli
from lapmusic.core.errors import LapMusicError
from lapmusic.model.config import ModelConfig
from lapmusic.model.rnn import PianoRollRNN
from lapmusic.sampling.sample import generate
from lapmusic.training.config import TrainConfig
from lapmusic.training.results import evaluate, load_run
from lapmusic.training.train import train


def test_skip_logits_are_w_out_h_plus_c_plus_w_skip_x():
    torch.manual_seed(0)
    model = PianoRollRNN.from_config(ModelConfig(5, readout_skip=True))
    with torch.no_grad():
        model.head.skip.weight.normal_(0, 1.0)  # far from zero so the term really counts
    x = (torch.rand(2, 7, 88) < 0.2).float()
    logits, _ = model(x)
    # By hand: the Elman recursion, then the two linear maps.
    rnn = model.recurrent
    h = torch.zeros(2, 5)
    expected = []
    for t in range(7):
        h = torch.tanh(x[:, t] @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + h @ rnn.weight_hh_l0.T + rnn.bias_hh_l0)
        head = model.head
        expected.append(h @ head.readout.weight.T + head.readout.bias + x[:, t] @ head.skip.weight.T)
    assert torch.allclose(logits, torch.stack(expected, 1), atol=1e-5)
    # Step by step (how sampling calls it) gives the same logits.
    state, steps = None, []
    for t in range(7):
        out, state = model(x[:, t : t + 1], state)
        steps.append(out[:, 0])
    assert torch.allclose(logits, torch.stack(steps, 1), atol=1e-5)


def test_a_new_skip_is_zero_and_changes_nothing_else():
    torch.manual_seed(3)
    plain = PianoRollRNN.from_config(ModelConfig(6, dropout=0.2))
    after_plain = torch.rand(1)
    torch.manual_seed(3)
    skip = PianoRollRNN.from_config(ModelConfig(6, dropout=0.2, readout_skip=True))
    after_skip = torch.rand(1)
    assert after_plain == after_skip  # building the skip draws no random numbers
    assert set(skip.state_dict()) - set(plain.state_dict()) == {"head.skip.weight"}
    assert "head.skip.weight" not in plain.state_dict() and plain.head.skip is None
    assert float(skip.head.skip.weight.detach().abs().sum()) == 0.0
    x = (torch.rand(3, 9, 88) < 0.3).float()
    plain.eval(), skip.eval()
    assert torch.equal(plain(x)[0], skip(x)[0])


def test_config_and_model_validation():
    with pytest.raises(LapMusicError, match="readout_skip needs output 'bernoulli'"):
        PianoRollRNN.from_config(ModelConfig(4, output="nade", readout_skip=True))
    with pytest.raises(LapMusicError, match="readout_skip needs output 'bernoulli'"):
        TrainConfig(model=ModelConfig(output="nade", readout_skip=True)).validate()
    with pytest.raises(LapMusicError, match="readout_skip must be true or false"):
        TrainConfig(model=ModelConfig(readout_skip=1)).validate()
    with pytest.raises(LapMusicError, match="readout_skip_fit must be true or false"):
        TrainConfig(readout_skip_fit="yes").validate()
    with pytest.raises(ValueError, match="no readout skip"):
        PianoRollRNN.from_config(ModelConfig(4)).head.set_readout(torch.zeros(88, 4), torch.zeros(88), torch.eye(88))
    # A config.json written before the keys existed loads as no skip.
    old = TrainConfig().to_dict()
    del old["readout_skip"], old["readout_skip_fit"]
    config = TrainConfig.from_dict(old)
    assert config.model.readout_skip is False and config.readout_skip_fit is True


def test_greedy_sampling_reads_the_skip():
    """``W_out = 0``, ``c = -5``, ``W_skip = 10 I``: key k's logit is ``10 x_k - 5``, so the greedy frame is the
    frame just read and the whole continuation holds the primer's last chord."""
    model = PianoRollRNN.from_config(ModelConfig(4, readout_skip=True))
    model.head.set_readout(torch.zeros(88, 4), torch.full((88,), -5.0), 10 * torch.eye(88))
    primer = np.zeros((2, 88), dtype=np.uint8)
    primer[0, [40, 44]] = 1
    primer[1, [39, 43, 46]] = 1
    rolls = generate(model, steps=6, temperature=0, primer=primer, seed=0)
    assert (rolls[0, 2:] == primer[1]).all()
    without = PianoRollRNN.from_config(ModelConfig(4))
    without.head.set_readout(torch.zeros(88, 4), torch.full((88,), -5.0))
    assert generate(without, steps=6, temperature=0, primer=primer, seed=0)[0, 2:].sum() == 0


@pytest.fixture(scope="module")
def dataset():
    return synthetic_dataset((16, 4, 4), (10, 30), density=0.2)


def test_lae_run_with_a_fitted_skip_trains_loads_evaluates_and_samples(tmp_path, dataset):
    base = TrainConfig(dataset="synthetic", model=ModelConfig(hidden=8), init="lae", epochs=2, lr=1e-2, batch_size=4,
                       bptt=8, seed=0, device="cpu", patience=None, readout_ridge=0.1)
    with_skip = ModelConfig(hidden=8, readout_skip=True)
    final = train(dataclasses.replace(base, model=with_skip), tmp_path / "skip", dataset=dataset)
    train(dataclasses.replace(base, epochs=1), tmp_path / "plain", dataset=dataset)
    train(dataclasses.replace(base, model=with_skip, epochs=1, readout_skip_fit=False), tmp_path / "zero",
          dataset=dataset)

    def first(name):
        return json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[0])

    # The rolls hold notes for 1-4 frames: the previous frame predicts the next, and the joint pre-fit uses it.
    assert first("skip")["train_nll"] < first("plain")["train_nll"] - 0.5
    # A zero skip starts exactly where the plain LAE start does.
    assert first("zero")["train_nll"] == pytest.approx(first("plain")["train_nll"], rel=1e-6)
    assert first("zero")["valid_nll"] == pytest.approx(first("plain")["valid_nll"], rel=1e-6)
    run = load_run(tmp_path / "skip")
    assert run.config.model.readout_skip is True and run.model.head.skip is not None
    assert float(run.model.head.skip.weight.detach().abs().sum()) > 0
    assert evaluate(run, dataset.test)["nll"] == pytest.approx(final["nll"], rel=1e-6)
    rolls = generate(run.model, steps=10, primer=dataset.test[0][:3], seed=1, n_samples=2)
    assert rolls.shape == (2, 13, 88)
    # A run folder written before readout_skip existed (no key, no skip weight) still loads.
    saved = json.loads((tmp_path / "plain" / "config.json").read_text())
    del saved["readout_skip"], saved["readout_skip_fit"]
    (tmp_path / "plain" / "config.json").write_text(json.dumps(saved))
    old = load_run(tmp_path / "plain")
    assert old.model.head.skip is None and old.config.model.readout_skip is False


def test_cli_train_with_readout_skip(tmp_path, dataset, monkeypatch, capsys):
    monkeypatch.setattr("lapmusic.training.build.load_run_dataset", lambda key: dataset)
    code = cli.main(["train", "--dataset", "jsb", "--hidden", "8", "--init", "random", "--epochs", "1",
                     "--readout-skip", "--device", "cpu", "--out", str(tmp_path / "run"), "--json"])
    assert code == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["readout_skip"] is True
    code = cli.main(["train", "--dataset", "jsb", "--hidden", "8", "--epochs", "1", "--readout-skip", "--output",
                     "nade", "--device", "cpu", "--out", str(tmp_path / "bad")])
    assert code == 2 and "--readout-skip needs --output bernoulli" in capsys.readouterr().err


def test_run_label_names_the_readout_skip():
    from lapmusic.ui.labels import run_label

    assert run_label({"init": "lae", "hidden": 8, "seed": 1, "readout_skip": True}) == "LAE · h8 · seed 1 · skip"
    assert run_label({"init": "lae", "hidden": 8, "seed": 1}) == "LAE · h8 · seed 1"
