"""scripts/acc_by_previous.py: the two-threshold ACC grid, the per-piece count, Platt and the collection of
probabilities, each against a direct computation on small data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_script, random_rolls, synthetic_config, synthetic_dataset

from lapmusic.model.config import ModelConfig
from lapmusic.model.metrics import THRESHOLD_BINS
from lapmusic.model.rnn import PianoRollRNN

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def script():
    return load_script("scripts/acc_by_previous.py")


def direct_acc(p, previous, played, t_on, t_off):
    on = np.where(previous, p >= t_on, p >= t_off)
    tp, fp, fn = (on & played).sum(), (on & ~played).sum(), (~on & played).sum()
    return 100.0 * tp / (tp + fp + fn)


def test_two_threshold_grid_matches_thresholding_directly(script):
    rng = np.random.default_rng(0)
    n = 400
    # p at bin centres, so "bin >= j" and "p >= j / bins" agree exactly
    p = (rng.integers(0, THRESHOLD_BINS, n) + 0.5) / THRESHOLD_BINS
    previous = rng.random(n) < 0.3
    played = rng.random(n) < np.where(previous, 0.6, 0.1) * (0.5 + p)
    grid = script.two_threshold_grid(p, previous, played)
    assert grid.shape == (THRESHOLD_BINS, THRESHOLD_BINS)
    for i in range(0, THRESHOLD_BINS, 7):
        for j in range(0, THRESHOLD_BINS, 11):
            assert grid[i, j] == pytest.approx(direct_acc(p, previous, played, i / THRESHOLD_BINS,
                                                          j / THRESHOLD_BINS))
    # the diagonal is the one-threshold curve
    assert grid[50, 50] == pytest.approx(script.acc_at(played, p >= 50 / THRESHOLD_BINS))


def test_pieces_beating_copy_counts_per_piece(script):
    # piece 0: the decisions equal the previous frame (a tie, not a win); piece 1: one extra hit
    piece = np.array([0, 0, 0, 1, 1, 1])
    previous = np.array([1, 0, 0, 1, 0, 0], bool)
    played = np.array([1, 1, 0, 1, 1, 0], bool)
    on = np.array([1, 0, 0, 1, 1, 0], bool)
    assert script.pieces_beating_copy(on, previous, played, piece) == "1/2"
    assert script.pieces_beating_copy(previous, previous, played, piece) == "0/2"


def test_platt_fit_is_a_stationary_point_of_the_nll(script):
    rng = np.random.default_rng(1)
    z = rng.normal(size=5000)
    p = 1 / (1 + np.exp(-z))
    played = rng.random(5000) < 1 / (1 + np.exp(-(0.5 * z - 1.0)))  # true a = 0.5, b = -1
    a, b = script.platt(p, played)
    q = 1 / (1 + np.exp(-(a * z + b)))
    assert np.abs([(q - played) @ z, (q - played).sum()]).max() < 1e-6 * len(z)
    assert a == pytest.approx(0.5, abs=0.1) and b == pytest.approx(-1.0, abs=0.15)
    calibrated = script.apply_platt(p, np.ones(5000, bool), {0: np.array([1.0, 0.0]), 1: np.array([a, b])})
    assert np.allclose(calibrated, q)


def test_collect_matches_running_each_piece_alone(script):
    torch.manual_seed(0)
    model = PianoRollRNN.from_config(ModelConfig(hidden=5)).eval()
    seqs = random_rolls(5, (3, 9), seed=2) + [np.zeros((1, 88), np.uint8)]  # a 1-frame piece predicts nothing
    p, previous, played, piece = script.collect(model, seqs, torch.device("cpu"), batch_size=2, window=4)
    assert len(p) == 88 * sum(len(s) - 1 for s in seqs)
    for index, seq in enumerate(seqs[:-1]):
        x = torch.as_tensor(seq[None, :-1], dtype=torch.float32)
        with torch.no_grad():
            expected = torch.sigmoid(model(x)[0].double())[0].numpy().ravel()
        mine = piece == index
        assert np.allclose(p[mine], expected)  # frame by frame, key by key
        assert (previous[mine] == seq[:-1].ravel().astype(bool)).all()
        assert (played[mine] == seq[1:].ravel().astype(bool)).all()



def test_analyse_reproduces_final_json_and_renders(script, tmp_path, monkeypatch, one_torch_thread):
    from lapmusic.training.train import train

    dataset = synthetic_dataset((12, 4, 4), (10, 30), density=0.2)
    monkeypatch.setattr("lapmusic.training.build.load_run_dataset", lambda key: dataset)
    final = train(synthetic_config(hidden=6, epochs=2, init="random"), tmp_path / "run", dataset=dataset)
    result = script.analyse(tmp_path / "run")
    # rule (a) is the library's validation threshold and its test ACC
    assert result["single"]["threshold"] == pytest.approx(final["threshold"])
    assert result["single"]["test"] == pytest.approx(final["acc_tuned"])
    assert result["acc_05"] == pytest.approx(final["acc"])
    # two thresholds contain the single one (its diagonal): never worse on validation
    assert result["two"]["valid"] >= result["single"]["valid"] - 1e-9
    assert result["two"]["test_bound"] >= result["two"]["test"] - 1e-9
    # Platt by NLL on validation can only lower the validation NLL
    assert result["calibrated"]["valid_nll_after"] <= result["calibrated"]["valid_nll_before"] + 1e-9
    table = script.markdown([result])
    assert table.count("\n") == 2 and "| synthetic | random | 3 |" in table
