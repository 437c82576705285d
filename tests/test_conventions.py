"""The two NLL conventions: frames 2..T (the first frame left out) and every frame (the first one scored)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import synthetic_config, synthetic_dataset

from lapmusic.cli import main as cli
from lapmusic.model.config import ModelConfig
from lapmusic.model.metrics import nll_with_first_frames
from lapmusic.model.rnn import PianoRollRNN
from lapmusic.training import build as build_module
from lapmusic.training.epoch import evaluate_tensors
from lapmusic.training.results import evaluate, first_frame_nll
from lapmusic.training.train import train


def test_pooling_by_hand():
    # 3 predicted frames at 2 nats each and one first frame costing 5 nats: (6 + 5) / 4.
    assert nll_with_first_frames(2.0, 3, 5.0, 1) == pytest.approx(2.75)
    assert nll_with_first_frames(None, 0, 3.0, 2) == pytest.approx(1.5)  # only one-frame pieces
    assert nll_with_first_frames(None, 0, 0.0, 0) is None


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def _one_unit_network() -> PianoRollRNN:
    """One tanh unit reading key 0: ``h_t = tanh(x_t[0] + 0.5 + 0.7 h_{t-1})``; key 0's logit ``2 h - 1``, the
    other 87 keys' logit -40 (never played here: each costs ``softplus(-40)``, about 4e-18 nats)."""
    model = PianoRollRNN.from_config(ModelConfig(1))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.recurrent.weight_ih_l0[0, 0] = 1.0
        model.recurrent.bias_ih_l0[0] = 0.5
        model.recurrent.weight_hh_l0[0, 0] = 0.7
        model.head.readout.weight[0, 0] = 2.0
        model.head.readout.bias.fill_(-40.0)
        model.head.readout.bias[0] = -1.0
    return model.eval()


def test_both_conventions_by_hand_on_a_one_unit_network():
    pieces = []
    for keys in ([1, 0, 1], [1], [0, 1]):  # key 0 on or off in each frame; a one-frame piece predicts nothing
        roll = np.zeros((len(keys), 88), dtype=np.uint8)
        roll[:, 0] = keys
        pieces.append(roll)
    # BCE of key 0 with logit l: softplus(-l) when played, softplus(l) when silent.
    first = 2.0 * math.tanh(0.5) - 1.0  # the state after a silent frame read from the zero state
    first_cost = 2 * _softplus(-first) + _softplus(first)  # first frames: on, on, off
    h1 = math.tanh(1.5)  # piece 1 read frame 1 (key on)
    h2 = math.tanh(0.5 + 0.7 * h1)  # then frame 2 (key off)
    later_cost = _softplus(2 * h1 - 1) + _softplus(-(2 * h2 - 1))  # its frame 2 off, frame 3 on
    h1 = math.tanh(0.5)  # piece 3 read frame 1 (key off)
    later_cost += _softplus(-(2 * h1 - 1))  # its frame 2 on
    silent_keys = 87 * _softplus(-40.0)

    result = evaluate(_one_unit_network(), pieces)
    assert result["frames"] == 3 and result["frames_first_frame_scored"] == 6
    assert result["nll"] == pytest.approx(later_cost / 3 + silent_keys, rel=1e-6)
    assert result["nll_first_frame_scored"] == pytest.approx((later_cost + first_cost) / 6 + silent_keys, rel=1e-6)
    total, count = first_frame_nll(_one_unit_network(), [torch.from_numpy(p) for p in pieces])
    assert count == 3 and total == pytest.approx(first_cost + 3 * silent_keys, rel=1e-6)


def test_the_recipe_first_frame_is_the_frame_after_a_read_silence():
    """For the sampling recipe (vocabulary, NADE, copy window), the first-frame term equals the evaluation's own
    NLL of frame 2 of the two-frame pieces ``[silence, first frame]``: the same conditional, another code path."""
    torch.manual_seed(0)
    model = PianoRollRNN.from_config(ModelConfig(8, output="nade", nade_hidden=6, nade_vocab=6, nade_repeat=True,
                                                 nade_repeat_window=4))
    rng = np.random.default_rng(0)
    chords = (rng.random((5, 88)) < 0.06).astype(np.uint8)
    pieces = [chords[rng.integers(0, 5, n)] for n in (12, 7, 1, 5)]
    model.head.prepare(pieces)
    with torch.no_grad():  # away from the init so that every component matters
        for parameter in model.head.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    model.eval()
    result = evaluate(model, pieces)
    assert result["frames"] == sum(len(p) - 1 for p in pieces)
    assert result["frames_first_frame_scored"] == sum(len(p) for p in pieces)
    firsts = [torch.from_numpy(np.stack([np.zeros(88, np.uint8), p[0]])) for p in pieces]
    reference = evaluate_tensors(model, firsts, batch_size=2)
    assert reference["frames"] == len(pieces)
    added = (result["nll_first_frame_scored"] * result["frames_first_frame_scored"]
             - result["nll"] * result["frames"])
    assert added == pytest.approx(reference["nll"] * len(pieces), rel=1e-5)


def test_evaluate_command_prints_both(tmp_path, monkeypatch, capsys):
    dataset = synthetic_dataset((6, 3, 3), (8, 14))
    train(synthetic_config(init="random", epochs=1, hidden=8), tmp_path / "run", dataset=dataset)
    monkeypatch.setattr(build_module, "load_run_dataset", lambda key: dataset)
    assert cli.main(["evaluate", str(tmp_path / "run"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["frames"] == sum(len(p) - 1 for p in dataset.test)
    assert result["frames_first_frame_scored"] == sum(len(p) for p in dataset.test)
    assert result["nll_first_frame_scored"] != result["nll"]
    assert cli.main(["evaluate", str(tmp_path / "run")]) == 0
    assert "with the first frame scored too" in capsys.readouterr().out
