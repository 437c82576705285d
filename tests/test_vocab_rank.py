"""The chord logits through a rank-r map (``nade_vocab_rank``, lapmusic/model/chordvocab.py ``LowRankLinear``):
the same exact mixture as a full-rank layer with the product weight, the truncated-SVD start, the fresh start,
save/load, the config's checks and a training run from the command line."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from lapmusic.core.errors import LapMusicError
from lapmusic.model.chordvocab import ChordVocabNADE, LowRankLinear
from lapmusic.model.config import ModelConfig
from lapmusic.model.rnn import PianoRollRNN
from lapmusic.training.config import TrainConfig

K = 5
CHORDS = np.array([(0, 0, 0, 0, 0), (1, 0, 1, 0, 0), (0, 1, 0, 1, 1), (1, 1, 1, 1, 1), (0, 0, 1, 1, 0)], np.uint8)


def _frames() -> torch.Tensor:
    return torch.tensor(list(itertools.product([0, 1], repeat=K)), dtype=torch.float64)  # (2^K, K)


def _layer(rank: int, seed: int = 0) -> ChordVocabNADE:
    torch.manual_seed(seed)
    layer = ChordVocabNADE(4, K, 3, max_chords=8, rank=rank)
    layer.set_vocabulary(CHORDS, np.arange(len(CHORDS), 0, -1), 30)
    with torch.no_grad():  # away from the start, where the chord logits ignore the state
        for parameter in layer.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.7)
    return layer.double()


@torch.no_grad()
def test_low_rank_mixture_is_the_full_mixture_with_the_product_weight_and_sums_to_one():
    low = _layer(rank=2)
    full = ChordVocabNADE(4, K, 3, max_chords=8)
    full.set_vocabulary(CHORDS, np.arange(len(CHORDS), 0, -1), 30)
    full.double()
    state = {k: v for k, v in low.state_dict().items() if not k.startswith("chord_logits.")}
    full.load_state_dict({**state, "chord_logits.weight": low.chord_logits.up.weight @ low.chord_logits.down.weight,
                          "chord_logits.bias": low.chord_logits.up.bias})
    frames = _frames()
    for seed in range(3):
        s = torch.randn(4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).expand(len(frames), 4)
        got = low.log_prob(s, frames)
        assert torch.allclose(got, full.log_prob(s, frames), atol=1e-12)
        assert math.isclose(float(got.exp().sum()), 1.0, abs_tol=1e-12)
    assert torch.linalg.matrix_rank(low.chord_logits.up.weight @ low.chord_logits.down.weight) == 2


@torch.no_grad()
def test_set_weight_is_the_truncated_svd():
    W = torch.randn(7, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    singular = torch.linalg.svdvals(W)
    for rank in (1, 3, 5, 9):  # 9 > min(7, 5): exact, the surplus units stay at zero
        layer = LowRankLinear(5, 7, rank).double()
        layer.set_weight(W)
        product = layer.up.weight @ layer.down.weight
        # Eckart-Young: the best rank-r error is the root sum of squares of the singular values left out
        assert math.isclose(float(torch.linalg.norm(W - product)), float(singular[rank:].square().sum().sqrt()),
                            abs_tol=1e-10)
    chord = _layer(rank=3)
    bias = torch.randn(len(CHORDS), dtype=torch.float64)
    rank_one = torch.outer(torch.arange(1.0, 6.0), torch.ones(4)).double()
    chord.set_chord_logits(rank_one, bias)  # what the LAE pre-fit calls (vocab_fit_steps)
    h = torch.randn(2, 4, dtype=torch.float64)
    assert torch.allclose(chord.chord_logits(h), h @ rank_one.T + bias, atol=1e-12)


def test_fresh_vocabulary_starts_at_the_frequencies_and_learns_through_both_factors():
    layer = _layer(rank=2)
    layer.set_vocabulary(CHORDS, np.array([5, 4, 3, 2, 1]), 30)
    layer.double()
    h = torch.randn(6, 4, dtype=torch.float64)
    logits = layer.chord_logits(h)
    assert torch.allclose(torch.softmax(logits, 1), torch.tensor([5, 4, 3, 2, 1.0]).double().expand(6, 5) / 15)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    frames = torch.as_tensor(CHORDS[[1, 2, 1, 3, 0, 4]], dtype=torch.float64)
    for _ in range(2):  # step 1 moves `up` (`down`'s gradient is U^T (...) = 0), step 2 moves `down` too
        before = [p.detach().clone() for p in (layer.chord_logits.up.weight, layer.chord_logits.down.weight)]
        optimizer.zero_grad()
        (-layer.log_prob(h, frames).sum()).backward()
        optimizer.step()
    assert not torch.equal(before[0], layer.chord_logits.up.weight)
    assert not torch.equal(before[1], layer.chord_logits.down.weight)


def test_rank_round_trips_through_state_dict_and_counts_fewer_weights(tmp_path):
    config = ModelConfig(16, output="nade", nade_hidden=4, nade_vocab=40, nade_vocab_rank=3, nade_repeat=True,
                         nade_repeat_window=4)
    torch.manual_seed(0)
    model = PianoRollRNN.from_config(config)
    chords = (np.random.default_rng(0).random((30, 88)) < 0.05).astype(np.uint8)
    chords[0] = 0
    model.head.set_vocabulary(chords, np.arange(30, 0, -1), 900)
    assert "rank=3" in repr(model.head)
    sizes = {name: p.numel() for name, p in model.head.named_parameters() if name.startswith("chord_logits.")}
    assert sizes == {"chord_logits.down.weight": 3 * 16, "chord_logits.up.weight": 30 * 3, "chord_logits.up.bias": 30}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    fresh = PianoRollRNN.from_config(config)
    fresh.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    x = torch.as_tensor(chords[None, :6], dtype=torch.float32)
    y = torch.as_tensor(chords[None, 1:7], dtype=torch.float32)
    model.eval(), fresh.eval()
    assert torch.equal(fresh.frame_nll(x, targets=y)[0], model.frame_nll(x, targets=y)[0])
    full = PianoRollRNN.from_config(ModelConfig(16, output="nade", nade_hidden=4, nade_vocab=40, nade_repeat=True,
                                                nade_repeat_window=4))
    with pytest.raises(RuntimeError, match="chord_logits"):  # a rank is part of the weights' shapes
        full.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))


def test_config_checks_the_rank():
    TrainConfig(model=ModelConfig(output="nade", nade_vocab=256, nade_vocab_rank=32)).validate()
    with pytest.raises(LapMusicError, match="nade_vocab_rank needs nade_vocab"):
        TrainConfig(model=ModelConfig(output="nade", nade_vocab_rank=32)).validate()
    for bad in (-1, 2.5, True, 10_000):
        with pytest.raises(LapMusicError, match="nade_vocab_rank must be an integer"):
            TrainConfig(model=ModelConfig(output="nade", nade_vocab=8, nade_vocab_rank=bad)).validate()
    old = TrainConfig(model=ModelConfig(output="nade", nade_vocab=8)).to_dict()
    del old["nade_vocab_rank"]  # a run folder written before the option existed
    assert TrainConfig.from_dict(old).model.nade_vocab_rank == 0


def test_cli_trains_with_a_rank_and_names_the_option_in_errors(tmp_path, capsys):
    from lapmusic.cli.main import main
    from lapmusic.training.results import load_run

    common = ["train", "--dataset", "bach", "--max-sequences", "6", "--hidden", "8", "--output", "nade",
              "--nade-hidden", "4", "--epochs", "1", "--init", "random", "--device", "cpu", "--seed", "0"]
    assert main(common + ["--nade-vocab-rank", "4", "--out", str(tmp_path / "bad")]) != 0
    assert "--nade-vocab-rank needs --nade-vocab" in capsys.readouterr().err
    assert main(common + ["--nade-vocab", "16", "--nade-vocab-rank", "4", "--out", str(tmp_path / "run")]) == 0
    run = load_run(tmp_path / "run")
    assert run.config.model.nade_vocab_rank == 4 and run.model.head.chord_logits.up.weight.shape[1] == 4
