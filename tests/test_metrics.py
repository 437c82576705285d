"""Metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lapmusic.model.metrics import (
    MetricAccumulator,
    accuracy,
    baselines,
    copy_previous_acc,
    expected_accuracy,
    key_frequencies,
    marginal_nll,
    nll,
)

# Two predicted frames, three keys.
PROBS = np.array([[0.9, 0.2, 0.6], [0.4, 0.5, 0.0]])
TARGETS = np.array([[1, 0, 0], [1, 1, 0]])
# By hand: frame 1 costs -(ln 0.9 + ln 0.8 + ln 0.4) = 1.2447948, frame 2 -(ln 0.4 + ln 0.5 + ln 1) = 1.6094379.
HAND_NLL = (1.2447948 + 1.6094379) / 2
# p >= 0.5 predicts [[1,0,1],[0,1,0]]: TP = 2 (k0 f1, k1 f2), FP = 1 (k2 f1), FN = 1 (k0 f2) -> 100 * 2/4.
HAND_ACC = 50.0
# Soft: TP = .9 + .4 + .5 = 1.8, FP = .2 + .6 + 0 = .8, FN = .1 + .6 + .5 = 1.2 -> 100 * 1.8/3.8.
HAND_EXPECTED_ACC = 100 * 1.8 / 3.8


def test_nll_by_hand():
    assert nll(PROBS, TARGETS) == pytest.approx(HAND_NLL, abs=1e-6)


def test_acc_by_hand():
    assert accuracy(PROBS, TARGETS) == pytest.approx(HAND_ACC)


def test_acc_threshold_is_inclusive():
    # p = 0.5 counts as "on": a single key at exactly 0.5 that is played is a true positive.
    assert accuracy(np.array([[0.5]]), np.array([[1]])) == 100.0
    assert accuracy(np.array([[0.4999]]), np.array([[1]])) == 0.0


def test_expected_acc_by_hand():
    assert expected_accuracy(PROBS, TARGETS) == pytest.approx(HAND_EXPECTED_ACC)


def test_acc_undefined_when_nothing_played_or_predicted():
    assert accuracy(np.zeros((3, 4)), np.zeros((3, 4))) is None
    assert expected_accuracy(np.zeros((3, 4)), np.zeros((3, 4))) is None


def test_accumulator_matches_hand_values_and_ignores_padding():
    # p = 0 is logit -inf; a network's logits are finite, so use -40 (p ~ 4e-18, cost ~ 4e-18 nats).
    logits = torch.log(torch.tensor(PROBS) / (1 - torch.tensor(PROBS))).clamp(min=-40.0)
    # A batch of one sequence, two real frames and one padded frame full of garbage.
    padded_logits = torch.cat([logits, torch.tensor([[9.0, -3.0, 5.0]])])[None]
    padded_targets = torch.cat([torch.tensor(TARGETS, dtype=torch.float64), torch.tensor([[0.0, 1.0, 1.0]])])[None]
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    totals = MetricAccumulator()
    totals.update(padded_logits, padded_targets, mask)
    result = totals.result()
    assert result["frames"] == 2
    assert result["nll"] == pytest.approx(HAND_NLL, abs=1e-5)
    assert result["acc"] == pytest.approx(HAND_ACC)
    assert result["expected_acc"] == pytest.approx(HAND_EXPECTED_ACC, abs=1e-5)


def test_accumulator_pools_frames_not_batches():
    # Pooled over frames: two updates equal one update with everything (not the mean of two ACCs).
    rng = np.random.default_rng(0)
    probs = rng.uniform(0.01, 0.99, size=(7, 5))
    targets = (rng.random((7, 5)) < 0.4).astype(float)
    logits = torch.tensor(np.log(probs / (1 - probs)))
    split = MetricAccumulator()
    split.update(logits[:2], torch.tensor(targets[:2]))
    split.update(logits[2:], torch.tensor(targets[2:]))
    whole = {"nll": nll(probs, targets), "acc": accuracy(probs, targets),
             "expected_acc": expected_accuracy(probs, targets), "frames": 7}
    for key, value in whole.items():
        assert split.result()[key] == pytest.approx(value, abs=1e-9)


def test_copy_previous_acc_by_hand():
    # Frame 2 predicted [1,0] vs [1,1]: TP 1, FN 1. Frame 3 predicted [1,1] vs [0,1]: TP 1, FP 1. ACC = 2/4.
    seq = np.array([[1, 0], [1, 1], [0, 1]], dtype=np.uint8)
    silent = np.zeros((2, 2), dtype=np.uint8)  # adds nothing to any count
    single = np.array([[1, 1]], dtype=np.uint8)  # one frame: nothing predicted
    assert copy_previous_acc([seq, silent, single]) == pytest.approx(50.0)


def test_marginal_nll_by_hand():
    train = [np.array([[1, 0], [1, 0], [0, 0], [1, 1]], dtype=np.uint8)]
    # Smoothed frequencies (count + 0.5) / (frames + 1) = (3.5/5, 1.5/5) = (0.7, 0.3).
    assert key_frequencies(train) == pytest.approx([0.7, 0.3])
    evaluation = [np.array([[0, 0], [1, 1]], dtype=np.uint8)]  # only frame 2 = [1, 1] is predicted
    assert marginal_nll(train, evaluation) == pytest.approx(-math.log(0.7) - math.log(0.3))
    both = baselines(train, evaluation)
    assert set(both) == {"copy_previous_acc", "marginal_nll"}
    assert both["copy_previous_acc"] == 0.0  # frame 1 silent: predicts nothing, misses two keys


# Threshold choice by hand: two frames, three keys, probabilities away from the 1/200 grid's edges.
#   p:  [[0.91, 0.31, 0.11], [0.61, 0.36, 0.21]]     y: [[1, 1, 0], [0, 1, 0]]  (3 played keys)
#   t in (0.61, 0.91]: on {0.91}                  TP 1 FP 0 FN 2 -> 33.3 %
#   t in (0.36, 0.61]: on {0.91, 0.61}            TP 1 FP 1 FN 2 -> 25 %      (0.5 sits here)
#   t in (0.31, 0.36]: on {.91, .61, .36}         TP 2 FP 1 FN 1 -> 50 %
#   t in (0.21, 0.31]: on {.91, .61, .36, .31}    TP 3 FP 1 FN 0 -> 75 %      <- best
#   t in (0.11, 0.21]: adds 0.21 (silent)         TP 3 FP 2 FN 0 -> 60 %
# On the 0.005 grid the best run is j/200 for j = 43..62; its middle, j = 52, is 0.26.
THRESHOLD_PROBS = np.array([[0.91, 0.31, 0.11], [0.61, 0.36, 0.21]])
THRESHOLD_TARGETS = np.array([[1, 1, 0], [0, 1, 0]])


def test_threshold_choice_by_hand():
    acc = MetricAccumulator()
    logits = torch.logit(torch.tensor(THRESHOLD_PROBS, dtype=torch.float64))
    acc.update(logits, torch.tensor(THRESHOLD_TARGETS, dtype=torch.float64))
    assert acc.best_threshold() == pytest.approx(0.26)
    assert acc.acc_at(0.26) == pytest.approx(75.0)
    assert acc.acc_at(0.5) == pytest.approx(25.0) == acc.result()["acc"]
    assert acc.acc_at(0.33) == pytest.approx(50.0)
    assert acc.acc_at(0.15) == pytest.approx(60.0)
    assert acc.acc_at(0.8) == pytest.approx(100 / 3)
    # The curve agrees with accuracy() at every grid threshold.
    for j in range(1, 200, 6):  # odd j: never on a probability (they sit on even j)
        assert acc.acc_at(j / 200) == pytest.approx(accuracy(THRESHOLD_PROBS, THRESHOLD_TARGETS, j / 200))


def test_threshold_ignores_masked_frames_and_is_none_when_nothing_is_played():
    acc = MetricAccumulator()
    logits = torch.logit(torch.tensor(np.vstack([THRESHOLD_PROBS, [[0.99, 0.99, 0.99]]])))
    targets = torch.tensor(np.vstack([THRESHOLD_TARGETS, [[0, 0, 0]]]), dtype=torch.float64)
    acc.update(logits, targets, torch.tensor([1.0, 1.0, 0.0]))  # the third frame is padding
    assert acc.best_threshold() == pytest.approx(0.26)
    empty = MetricAccumulator()
    empty.update(torch.full((2, 3), -30.0), torch.zeros(2, 3))
    assert empty.best_threshold() is None and empty.acc_at(0.5) is None
