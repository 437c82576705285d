"""The chord-vocabulary mixture (lapmusic/model/chordvocab.py): exact likelihood against brute force, sampling
frequencies, the vocabulary builder, save/load of the vocabulary, config checks, and a training run."""

from __future__ import annotations

import copy
import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lapmusic.core.errors import LapMusicError
from lapmusic.model.chordvocab import ChordVocabNADE, build_vocabulary
from lapmusic.model.config import ModelConfig
from lapmusic.model.nade import NADEOutput
from lapmusic.model.rnn import PianoRollRNN
from lapmusic.training.config import TrainConfig

K = 5


def _all_frames(k: int = K) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0, 1], repeat=k)), dtype=torch.float32)  # (2^k, k)


def _layer(seed: int = 0, chords=((0, 0, 0, 0, 0), (1, 0, 1, 0, 0), (0, 1, 0, 1, 1), (1, 1, 1, 1, 1)),
           skip: bool = False) -> ChordVocabNADE:
    torch.manual_seed(seed)
    layer = ChordVocabNADE(3, K, 4, skip=skip, max_chords=8)
    chords = np.array(chords, dtype=np.uint8)
    layer.set_vocabulary(chords, np.arange(len(chords), 0, -1), 20)
    with torch.no_grad():  # away from the initialisation: every parameter matters
        for parameter in layer.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.7)
    return layer.double()


def _brute(layer: ChordVocabNADE, state: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
    """log p of every one of the 2^K frames for one state, from the definition, key by key."""
    frames = _all_frames().double()
    b, c = NADEOutput.biases(layer, state[None], None if x is None else x[None])
    b, c = b[0], c[0]
    pi = torch.sigmoid(layer.gate(state[None])[0, 0])
    cat = torch.softmax(layer.chord_logits(state[None])[0], 0)
    out = []
    for frame in frames:
        a, nade = c.clone(), 1.0
        for k in range(K):
            p = torch.sigmoid(b[k] + layer.V[k] @ torch.sigmoid(a))
            nade = nade * (p if frame[k] > 0 else 1 - p)
            a = a + frame[k] * layer.W[:, k]
        in_vocab = [i for i, chord in enumerate(layer.chords) if torch.equal(chord.double(), frame)]
        chord = cat[in_vocab[0]] if in_vocab else 0.0
        out.append(torch.log(pi * chord + (1 - pi) * nade))
    return torch.stack(out)


@pytest.mark.parametrize("skip", [False, True])
@torch.no_grad()
def test_log_prob_equals_brute_force_and_sums_to_one(skip):
    layer = _layer(1, skip=skip)
    frames = _all_frames().double()
    for seed in range(3):
        state = torch.randn(3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        x = torch.tensor([1.0, 0, 0, 1, 0], dtype=torch.float64) if skip else None
        expected = _brute(layer, state, x)
        got = layer.log_prob(state.expand(len(frames), 3), frames,
                             None if x is None else x.expand(len(frames), K))
        assert torch.allclose(got, expected, atol=1e-10)
        assert math.isclose(float(got.exp().sum()), 1.0, abs_tol=1e-10)


def test_frame_outside_vocabulary_gets_exactly_the_nade_share():
    layer = _layer(2)
    states = torch.randn(6, 3, dtype=torch.float64)
    frame = torch.tensor([[0, 0, 1, 1, 0]], dtype=torch.float64).expand(6, K)  # not one of the chords
    assert bool((layer.vocab_index(frame) == -1).all())
    nade = NADEOutput.log_prob(layer, states, frame)
    pi = torch.sigmoid(layer.gate(states)[:, 0])
    assert torch.allclose(layer.log_prob(states, frame), torch.log1p(-pi) + nade, atol=1e-12)


def test_vocab_index_is_exact():
    layer = _layer(3)
    frames = _all_frames()
    index = layer.vocab_index(frames)
    for row, frame in enumerate(frames):
        matches = [i for i, chord in enumerate(layer.chords) if torch.equal(chord.float(), frame)]
        assert int(index[row]) == (matches[0] if matches else -1)


@torch.no_grad()
def test_sampling_frequencies_match_probabilities():
    layer = _layer(4)
    state = torch.randn(1, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    probs = layer.log_prob(state.expand(32, 3), _all_frames().double()).exp()
    n = 40_000
    drawn = layer.sample(state.expand(n, 3), temperature=1.0, generator=torch.Generator().manual_seed(0))
    codes = (drawn.long() * (2 ** torch.arange(K - 1, -1, -1))).sum(1)  # same order as itertools.product
    counts = torch.bincount(codes, minlength=2**K).double()
    expected = probs * n
    keep = expected >= 5  # chi-square cells; the rare frames pooled into one cell
    chi2 = float((((counts[keep] - expected[keep]) ** 2) / expected[keep]).sum())
    rest_observed, rest_expected = float(counts[~keep].sum()), float(expected[~keep].sum())
    if rest_expected > 0:
        chi2 += (rest_observed - rest_expected) ** 2 / rest_expected
    dof = int(keep.sum()) - (0 if rest_expected > 0 else 1)
    assert chi2 < dof + 5 * math.sqrt(2 * dof)  # about 5 standard deviations of chi^2(dof)


@torch.no_grad()
def test_temperature_zero_polyphony_cap_and_gate_temperature():
    layer = _layer(6)
    states = torch.randn(50, 3, dtype=torch.float64)
    greedy = layer.sample(states, temperature=0.0)
    gate = layer.gate(states)[:, 0]
    best = layer.chords[layer.chord_logits(states).argmax(1)]
    nade_greedy = NADEOutput.sample(layer, states, temperature=0.0)
    expected = torch.where((gate >= 0).unsqueeze(1), best, nade_greedy)
    assert torch.equal(greedy, expected)
    capped = layer.sample(states.repeat(40, 1), temperature=1.0, max_polyphony=2,
                          generator=torch.Generator().manual_seed(1))
    assert int(capped.sum(1).max()) <= 2
    assert not any(torch.equal(row, torch.ones(K, dtype=torch.uint8)) for row in capped)  # the 5-key chord is masked
    # The gate logit is divided by T too: P(frame in V) at T = 2 is sigmoid(g / 2) + (1 - sigmoid(g / 2)) times
    # the NADE's own mass on V at T = 2 (a NADE at temperature T is the NADE with b and V divided by T).
    state = states[:1]
    g = float(layer.gate(state)[0, 0])
    hot_nade = copy.deepcopy(layer)
    with torch.no_grad():
        for tensor in (hot_nade.visible_bias.weight, hot_nade.visible_bias.bias, hot_nade.V):
            tensor.div_(2.0)
    nade_mass = float(NADEOutput.log_prob(hot_nade, state.expand(len(layer.chords), 3), layer.chords.double()).exp().sum())
    pi_hot = 1 / (1 + math.exp(-g / 2))
    expected = pi_hot + (1 - pi_hot) * nade_mass
    n = 20_000
    hot = layer.sample(state.expand(n, 3), temperature=2.0, generator=torch.Generator().manual_seed(2))
    in_vocab = float((layer.vocab_index(hot) >= 0).double().mean())
    assert abs(in_vocab - expected) < 5 * math.sqrt(expected * (1 - expected) / n)
    pi_cold = 1 / (1 + math.exp(-g))
    assert abs(pi_hot - pi_cold) > 0.02  # the check above can tell T applied to the gate from not


def test_build_vocabulary_top_n_and_ties():
    a, b, c, d = ([0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 0])
    pieces = [np.array([a, a, b, c, b]), np.array([d, c, a, 2 * np.array(b)])]  # nonzero counts as on
    chords, counts, frames = build_vocabulary(pieces, 3)
    assert frames == 9
    assert counts.tolist() == [3, 3, 2]
    # a and b both appear 3 times: a = (0,0,1) sorts before b = (1,0,0); then c (2), d (1) is cut
    assert chords.tolist() == [a, b, c]
    chords, counts, _ = build_vocabulary(pieces, 10)
    assert len(chords) == 4 and chords[-1].tolist() == d and chords.dtype == np.uint8
    with pytest.raises(ValueError, match="the vocabulary needs at least one chord, got size 0"):
        build_vocabulary(pieces, 0)


def test_vocabulary_round_trips_through_state_dict(tmp_path):
    torch.manual_seed(0)
    model = PianoRollRNN.from_config(ModelConfig(6, output="nade", nade_hidden=4, nade_vocab=50))
    chords = (np.random.default_rng(0).random((7, 88)) < 0.05).astype(np.uint8)
    chords[0] = 0
    model.head.set_vocabulary(chords, np.arange(7, 0, -1) * 10, 400)
    assert tuple(model.head.chords.shape) == (7, 88)
    assert math.isclose(float(torch.sigmoid(model.head.gate.bias.detach())), 280 / 400 / 2, rel_tol=1e-6)
    assert torch.allclose(torch.softmax(model.head.chord_logits.bias, 0).double(),
                          torch.tensor(np.arange(7, 0, -1) / 28.0), atol=1e-6)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    fresh = PianoRollRNN.from_config(ModelConfig(6, output="nade", nade_hidden=4, nade_vocab=50))
    assert len(fresh.head.chords) == 1  # before loading: the empty frame alone
    fresh.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    assert torch.equal(fresh.head.chords, model.head.chords)
    x = torch.as_tensor(chords[None, [0, 1, 2, 3]], dtype=torch.float32)
    y = torch.as_tensor(chords[None, [1, 2, 3, 4]], dtype=torch.float32)
    model.eval(), fresh.eval()
    assert torch.allclose(fresh.frame_nll(x, targets=y)[0], model.frame_nll(x, targets=y)[0])
    assert bool((fresh.head.vocab_index(y) == torch.tensor([[1, 2, 3, 4]])).all())
    small = PianoRollRNN.from_config(ModelConfig(6, output="nade", nade_hidden=4, nade_vocab=5))  # N < saved |V|
    with pytest.raises(RuntimeError, match="more than nade_vocab"):
        small.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    with pytest.raises(ValueError, match="frame_nll"):
        model(x, targets=y)


def test_config_validation():
    TrainConfig(model=ModelConfig(output="nade", nade_vocab=256)).validate()
    TrainConfig(model=ModelConfig(nade_vocab=0)).validate()
    with pytest.raises(LapMusicError, match="nade_vocab needs output 'nade'"):
        TrainConfig(model=ModelConfig(output="bernoulli", nade_vocab=256)).validate()
    for bad in (-1, 1.5, True, 100_000, "256"):
        with pytest.raises(LapMusicError, match="nade_vocab must be an integer"):
            TrainConfig(model=ModelConfig(output="nade", nade_vocab=bad)).validate()
    with pytest.raises(LapMusicError, match="nade_vocab needs output 'nade'"):
        PianoRollRNN.from_config(ModelConfig(4, nade_vocab=3))
    old = TrainConfig(model=ModelConfig(output="nade")).to_dict()
    del old["nade_vocab"]  # a run folder written before the option existed
    assert TrainConfig.from_dict(old).model.nade_vocab == 0


@pytest.mark.parametrize("init", ["random", "lae"])
def test_training_run_and_load(tmp_path, init):
    from lapmusic.sampling.sample import generate
    from lapmusic.training.results import load_run
    from lapmusic.training.train import train

    rng = np.random.default_rng(0)
    chords = (rng.random((6, 88)) < 0.05).astype(np.uint8)

    def piece(length):
        return chords[rng.integers(0, 6, length)] | (rng.random((length, 88)) < 0.01).astype(np.uint8)

    data = SimpleNamespace(key="toy", train=[piece(30) for _ in range(6)], valid=[piece(20) for _ in range(2)],
                           test=[piece(20) for _ in range(2)])
    config = TrainConfig(dataset="toy", model=ModelConfig(hidden=8, output="nade", nade_hidden=4, nade_vocab=5),
                         init=init, epochs=2, batch_size=4, device="cpu", lae_solver="exact")
    final = train(config, tmp_path / "run", dataset=data)
    assert math.isfinite(final["nll"]) and "vocabulary" in final["acc_method"]
    run = load_run(tmp_path / "run")
    assert tuple(run.model.head.chords.shape) == (5, 88)
    roll = generate(run.model, steps=12, seed=0, max_polyphony=3)
    assert roll.shape == (1, 12, 88) and int(roll.sum(-1).max()) <= 3
