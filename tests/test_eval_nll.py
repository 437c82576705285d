"""evaluate_nll: the NLL alone, the same as the full evaluation's, without drawing frames for ACC."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lapmusic.model.config import ModelConfig
from lapmusic.model.metrics import MetricAccumulator
from lapmusic.model.rnn import PianoRollRNN
from lapmusic.training import epoch


def _model_and_pieces(**options):
    torch.manual_seed(1)
    model = PianoRollRNN.from_config(ModelConfig(8, **options))
    rng = np.random.default_rng(1)
    chords = (rng.random((5, 88)) < 0.06).astype(np.uint8)
    pieces = [chords[rng.integers(0, 5, n)] for n in (30, 21, 9, 2, 14)]
    model.head.prepare(pieces)
    with torch.no_grad():  # away from the init so that every component matters
        for parameter in model.head.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model, [torch.from_numpy(p) for p in pieces]


@pytest.mark.parametrize("options", [{}, {"output": "nade", "nade_hidden": 6},
                                     {"output": "nade", "nade_hidden": 6, "nade_vocab": 4, "nade_repeat": True,
                                      "nade_repeat_window": 3}])
def test_the_nll_alone_equals_the_full_evaluations(monkeypatch, options):
    model, pieces = _model_and_pieces(**options)
    full = epoch.evaluate_tensors(model, pieces, batch_size=2, acc_samples=2)
    drawn = []
    monkeypatch.setattr(type(model.head), "sample", lambda *a, **k: drawn.append(1))  # must not be called
    alone = epoch.evaluate_nll(model, pieces, batch_size=2)
    assert not drawn
    assert alone["frames"] == full["frames"] == sum(len(p) - 1 for p in pieces)
    assert math.isclose(alone["nll"], full["nll"], rel_tol=1e-6)
    assert alone["acc"] is None and alone["expected_acc"] is None


def test_the_accumulator_pools_the_nll_of_the_masked_frames_only():
    totals = MetricAccumulator()
    totals.update_nll(torch.tensor([[1.0, 2.0, 9.0], [3.0, 9.0, 9.0]]), torch.tensor([[1, 1, 0], [1, 0, 0]]))
    assert totals.result() == {"nll": 2.0, "acc": None, "expected_acc": None, "frames": 3}
