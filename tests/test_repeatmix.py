"""The repeat component (lapmusic/model/repeatmix.py): exact likelihood against brute force over all 2^K frames,
sampling frequencies, the polyphony cap, primers and silence, config checks, and training runs."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lapmusic.core.errors import LapMusicError
from lapmusic.model.config import ModelConfig
from lapmusic.model.nade import NADEOutput
from lapmusic.model.repeatmix import RepeatChordVocabNADE, RepeatNADE, repeat_share
from lapmusic.model.rnn import PianoRollRNN
from lapmusic.training.config import TrainConfig

K = 4
CHORDS = np.array([(0, 0, 0, 0), (1, 0, 1, 0), (0, 1, 1, 1)], dtype=np.uint8)


def _all_frames(k: int = K) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0, 1], repeat=k)), dtype=torch.float64)  # (2^k, k)


def _layer(vocab: bool, skip: bool = False, seed: int = 0, window: int = 1):
    """A repeat layer (state 3, K keys, 4 NADE units), with the chord vocabulary CHORDS when ``vocab``, its
    parameters moved away from the initialisation; float64. Also used by tests/test_repeatwindow.py."""
    torch.manual_seed(seed)
    if vocab:
        layer = RepeatChordVocabNADE(3, K, 4, skip=skip, window=window, max_chords=8)
        layer.set_vocabulary(CHORDS, np.array([5, 3, 2]), 20)
    else:
        layer = RepeatNADE(3, K, 4, skip=skip, window=window)
    with torch.no_grad():  # away from the initialisation: every parameter matters
        for parameter in layer.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.7)
    return layer.double()


def _brute(layer, state: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """p of every one of the 2^K frames for one state and previous frame, from the definitions, key by key."""
    b, c = NADEOutput.biases(layer, state[None], previous[None])
    b, c = b[0], c[0]
    r = torch.sigmoid(layer.repeat_gate(state[None])[0, 0])
    out = []
    for frame in _all_frames():
        a, nade = c.clone(), torch.tensor(1.0, dtype=torch.float64)
        for k in range(K):
            p = torch.sigmoid(b[k] + layer.V[k] @ torch.sigmoid(a))
            nade = nade * (p if frame[k] > 0 else 1 - p)
            a = a + frame[k] * layer.W[:, k]
        inner = nade
        if isinstance(layer, RepeatChordVocabNADE):
            pi = torch.sigmoid(layer.gate(state[None])[0, 0])
            cat = torch.softmax(layer.chord_logits(state[None])[0], 0)
            rows = [i for i, chord in enumerate(CHORDS) if np.array_equal(chord, frame.numpy())]
            inner = pi * (cat[rows[0]] if rows else 0.0) + (1 - pi) * nade
        out.append(r * float(torch.equal(frame, previous)) + (1 - r) * inner)
    return torch.stack(out)


@pytest.mark.parametrize("vocab,skip", [(False, False), (True, False), (False, True), (True, True)])
@torch.no_grad()
def test_log_prob_equals_brute_force_and_sums_to_one(vocab, skip):
    layer = _layer(vocab, skip, seed=1)
    frames = _all_frames()
    # the zero frame (the input before a sample from silence), a chord of the vocabulary, a frame outside it
    for seed, previous in enumerate(([0.0, 0, 0, 0], [1.0, 0, 1, 0], [1.0, 1, 0, 1])):
        previous = torch.tensor(previous, dtype=torch.float64)
        state = torch.randn(3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        expected = _brute(layer, state, previous)
        got = layer.log_prob(state.expand(len(frames), 3), frames, previous.expand(len(frames), K))
        assert torch.allclose(got.exp(), expected, atol=1e-12)
        assert math.isclose(float(got.exp().sum()), 1.0, abs_tol=1e-10)
        # the repeated frame carries the gate's mass on top of the inner model's
        r = float(torch.sigmoid(layer.repeat_gate(state)))
        same = int(np.flatnonzero((frames == previous).all(1).numpy())[0])
        assert float(got[same].exp()) > r


@pytest.mark.parametrize("vocab", [False, True])
@torch.no_grad()
def test_sampling_frequencies_match_probabilities(vocab):
    layer = _layer(vocab, seed=3)
    with torch.no_grad():
        layer.repeat_gate.bias.fill_(0.4)  # a large repeat share, so its frequency is tested tightly
    state = torch.randn(3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    previous = torch.tensor([1.0, 0, 1, 0], dtype=torch.float64)
    frames = _all_frames()
    probs = layer.log_prob(state.expand(len(frames), 3), frames, previous.expand(len(frames), K)).exp()
    n = 40_000
    drawn = layer.sample(state.expand(n, 3), 1.0, generator=torch.Generator().manual_seed(0),
                         inputs=previous.expand(n, K))
    codes = (drawn.long() * torch.tensor([8, 4, 2, 1])).sum(1)  # frame -> row of _all_frames
    freq = torch.bincount(codes, minlength=2**K).double() / n
    tolerance = 4 * torch.sqrt(probs * (1 - probs) / n) + 1e-3
    assert bool(((freq - probs).abs() <= tolerance).all())
    same = 0b1010
    assert float(probs[same]) > 0.55  # r = sigmoid(g) with g ~ 0.4 + noise, plus the inner share


@torch.no_grad()
def test_greedy_and_polyphony_cap():
    layer = _layer(False, seed=4)
    state = torch.randn(6, 3, dtype=torch.float64)
    previous = torch.tensor([[1.0, 1, 1, 0]], dtype=torch.float64).expand(6, K)  # three keys
    with torch.no_grad():
        layer.repeat_gate.weight.zero_()
        layer.repeat_gate.bias.fill_(30.0)  # r = 1 - 1e-13: always the copy, unless masked out
    copied = layer.sample(state, 1.0, generator=torch.Generator().manual_seed(0), inputs=previous)
    assert torch.equal(copied, previous.to(torch.uint8))
    assert torch.equal(layer.sample(state, 0.0, inputs=previous), previous.to(torch.uint8))
    assert torch.equal(layer.sample(state, 1.0, max_polyphony=3, generator=torch.Generator().manual_seed(0),
                                    inputs=previous), previous.to(torch.uint8))
    capped = layer.sample(state, 1.0, max_polyphony=2, generator=torch.Generator().manual_seed(0), inputs=previous)
    inner = NADEOutput.sample(layer, state, 1.0, 2, torch.Generator().manual_seed(0), previous)
    assert torch.equal(capped, inner) and int(capped.sum(1).max()) <= 2  # the repeat masked: the NADE's frame
    with torch.no_grad():
        layer.repeat_gate.bias.fill_(-30.0)
    assert torch.equal(layer.sample(state, 0.0, inputs=previous), NADEOutput.sample(layer, state, 0.0, inputs=previous))
    with pytest.raises(ValueError, match="frames read"):
        layer.sample(state, 1.0)


def test_generate_copies_silence_and_the_primer():
    from lapmusic.sampling.sample import generate

    torch.manual_seed(0)
    model = PianoRollRNN.from_config(ModelConfig(6, output="nade", nade_hidden=4, nade_repeat=True))
    with torch.no_grad():
        model.head.repeat_gate.bias.fill_(30.0)
    assert generate(model, steps=5, seed=0).sum() == 0  # from silence: the zero frame is the frame read
    primer = np.zeros((2, 88), dtype=np.uint8)
    primer[1, [39, 43, 46]] = 1
    roll = generate(model, steps=5, seed=0, primer=primer, n_samples=2)
    assert (roll[:, 2:] == primer[1]).all()
    capped = generate(model, steps=5, seed=0, primer=primer, max_polyphony=2)
    assert int(capped.sum(-1)[0, 2:].max()) <= 2 and not (capped[0, 2:] == primer[1]).all(1).any()


def test_repeat_share_and_gate_start():
    a, b = [1, 0, 0], [0, 1, 1]
    pieces = [np.array([a, a, b, b, b]), np.array([b]), np.array([a, b])]
    assert math.isclose(repeat_share(pieces), 3 / 5)  # 3 of the 5 predicted frames equal the one before
    assert repeat_share([np.array([a])]) == 0.0
    layer = RepeatNADE(3, 3, 2)
    layer.set_repeat_share(0.3)
    assert math.isclose(float(torch.sigmoid(layer.repeat_logit(torch.randn(3))).detach()), 0.15, rel_tol=1e-6)


def test_config_and_model_checks():
    TrainConfig(model=ModelConfig(output="nade", nade_repeat=True)).validate()
    with pytest.raises(LapMusicError, match="nade_repeat needs output 'nade'"):
        TrainConfig(model=ModelConfig(output="bernoulli", nade_repeat=True)).validate()
    with pytest.raises(LapMusicError, match="nade_repeat must be true or false"):
        TrainConfig(model=ModelConfig(output="nade", nade_repeat=1)).validate()
    with pytest.raises(LapMusicError, match="nade_repeat needs output 'nade'"):
        PianoRollRNN.from_config(ModelConfig(4, nade_repeat=True))
    old = TrainConfig(model=ModelConfig(output="nade", nade_vocab=8)).to_dict()
    del old["nade_repeat"]  # a run folder written before the option existed
    assert TrainConfig.from_dict(old).model.nade_repeat is False
    model = PianoRollRNN.from_config(ModelConfig(4, output="nade", nade_hidden=3, nade_repeat=True))
    x = torch.zeros(1, 3, 88)
    with pytest.raises(ValueError, match="frame_nll"):
        model(x, targets=x)
    plain = PianoRollRNN.from_config(ModelConfig(4, output="nade", nade_hidden=3))
    assert type(plain.head) is NADEOutput  # off: the plain layer


@pytest.mark.parametrize("init,vocab", [("random", 0), ("lae", 5), ("lae", 0)])
def test_training_run_and_load(tmp_path, init, vocab):
    from lapmusic.sampling.sample import generate
    from lapmusic.training.results import load_run
    from lapmusic.training.train import train

    rng = np.random.default_rng(0)
    chords = (rng.random((6, 88)) < 0.05).astype(np.uint8)

    def piece(length):  # chords held for 1-3 frames
        return np.repeat(chords[rng.integers(0, 6, length)], rng.integers(1, 4, length), axis=0)[:length]

    data = SimpleNamespace(key="toy", train=[piece(30) for _ in range(6)], valid=[piece(20) for _ in range(2)],
                           test=[piece(20) for _ in range(2)])
    config = TrainConfig(dataset="toy", model=ModelConfig(hidden=8, output="nade", nade_hidden=4, nade_vocab=vocab,
                                                          nade_repeat=True),
                         init=init, epochs=2, batch_size=4, device="cpu", lae_solver="exact")
    final = train(config, tmp_path / "run", dataset=data)
    assert math.isfinite(final["nll"]) and "repeat gate" in final["acc_method"]
    run = load_run(tmp_path / "run")
    assert isinstance(run.model.head, RepeatChordVocabNADE if vocab else RepeatNADE)
    roll = generate(run.model, steps=12, seed=0, max_polyphony=3)
    assert roll.shape == (1, 12, 88) and int(roll.sum(-1).max()) <= 3
