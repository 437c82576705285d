"""The repeat component's copy window (``nade_repeat_window = L``, lapmusic/model/repeatmix.py): the pointer mixture
``r sum_k w_k 1[x = x_{t-k+1}] + (1 - r) q(x)`` against brute force over all 2^K frames, L = 1 against the
plain repeat, the window across BPTT/evaluation cuts, offset sampling frequencies, the polyphony cap and the
start of the piece, primers, config checks and a training run."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_repeatmix import _layer
from torch import nn

from lapmusic.core.errors import LapMusicError
from lapmusic.model.chordvocab import ChordVocabNADE
from lapmusic.model.config import ModelConfig
from lapmusic.model.nade import NADEOutput
from lapmusic.model.repeatmix import RepeatChordVocabNADE, repeat_share
from lapmusic.model.rnn import PianoRollRNN
from lapmusic.training.config import TrainConfig

K = 4
CHORDS = np.array([(0, 0, 0, 0), (1, 0, 1, 0), (0, 1, 1, 1)], dtype=np.uint8)
A, B, C = [1.0, 0, 1, 0], [0.0, 1, 1, 1], [1.0, 1, 0, 0]


def _all_frames() -> torch.Tensor:
    return torch.tensor(list(itertools.product([0, 1], repeat=K)), dtype=torch.float64)  # (2^K, K)


def _inner_class(layer):
    return ChordVocabNADE if isinstance(layer, RepeatChordVocabNADE) else NADEOutput


@pytest.mark.parametrize("vocab", [False, True])
@torch.no_grad()
def test_window_log_prob_equals_brute_force_and_sums_to_one(vocab):
    layer = _layer(vocab, window=3, seed=1)
    # frames read: A, A, B, A, C - the window of step 3 holds A, B, A (A twice: its weights add up)
    inputs = torch.tensor([[A, A, B, A, C]], dtype=torch.float64)
    states = torch.randn(1, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    frames = _all_frames()
    n = len(frames)  # every frame as the target of every step at once: row i scores frame i
    every = layer.log_prob(states.expand(n, 5, 3), frames[:, None, :].expand(n, 5, K), inputs.expand(n, 5, K)).exp()
    for t in range(5):
        got = every[:, t]
        assert math.isclose(float(got.sum()), 1.0, abs_tol=1e-10)
        s = states[0, t]
        r = torch.sigmoid(layer.repeat_gate(s)[0])
        logits = layer.offset_logits(s)
        available = min(3, t + 1)  # offsets before the start of the piece do not exist
        w = torch.softmax(logits[:available], 0)
        inner = _inner_class(layer).log_prob(layer, s.expand(len(frames), 3), frames,
                                             inputs[0, t].expand(len(frames), K)).exp()
        for i, frame in enumerate(frames):
            copy = sum(float(w[k]) for k in range(available) if torch.equal(frame, inputs[0, t - k]))
            assert math.isclose(float(got[i]), float(r) * copy + (1 - float(r)) * float(inner[i]), abs_tol=1e-12)


@torch.no_grad()
def test_window_one_is_the_plain_repeat_exactly():
    layer = _layer(True, window=1, seed=3)
    assert layer.offset_logits is None and not any("offset" in name for name in layer.state_dict())
    inputs = torch.randint(0, 2, (2, 6, K), generator=torch.Generator().manual_seed(0)).double()
    frames = inputs.clone()
    frames[:, ::2] = torch.randint(0, 2, (2, 3, K), generator=torch.Generator().manual_seed(1)).double()
    states = torch.randn(2, 6, 3, dtype=torch.float64)
    # the formula of the plain repeat (before the window existed), written out
    gate = layer.repeat_logit(states)
    same = ((frames > 0.5) == (inputs > 0.5)).all(-1)
    inner = RepeatChordVocabNADE.__mro__[2].log_prob(layer, states, frames, inputs)
    copy = torch.where(same, nn.functional.logsigmoid(gate), torch.full_like(gate, -math.inf))
    assert torch.equal(layer.log_prob(states, frames, inputs), torch.logaddexp(copy, nn.functional.logsigmoid(-gate) + inner))


@torch.no_grad()
def test_past_makes_the_window_independent_of_cuts():
    layer = _layer(False, window=4, seed=5)
    inputs = torch.tensor([[A, B, A, C, B, B, A, C]], dtype=torch.float64)
    frames = torch.tensor([[B, A, C, B, B, A, C, A]], dtype=torch.float64)
    states = torch.randn(1, 8, 3, dtype=torch.float64)
    whole = layer.log_prob(states, frames, inputs)
    for cut in (1, 2, 5):
        past = inputs[:, max(0, cut - 3):cut]
        tail = layer.log_prob(states[:, cut:], frames[:, cut:], inputs[:, cut:], past=past)
        assert torch.allclose(tail, whole[:, cut:], atol=1e-12)
    assert not torch.allclose(layer.log_prob(states[:, 5:], frames[:, 5:], inputs[:, 5:]), whole[:, 5:])
    with pytest.raises(ValueError, match="past holds"):
        layer.log_prob(states, frames, inputs, past=inputs[:, :4])


def test_evaluation_windows_and_gradients():
    from lapmusic.training.epoch import evaluate_tensors

    torch.manual_seed(0)
    model = PianoRollRNN.from_config(ModelConfig(6, output="nade", nade_hidden=4, nade_repeat=True,
                                                 nade_repeat_window=3))
    rng = np.random.default_rng(0)
    chords = (rng.random((3, 88)) < 0.06).astype(np.uint8)
    pieces = [torch.from_numpy(chords[rng.integers(0, 3, n)]) for n in (12, 9)]
    full = evaluate_tensors(model, pieces, window=1000, acc_samples=4)["nll"]
    cut = evaluate_tensors(model, pieces, window=4, acc_samples=4)["nll"]
    assert math.isclose(full, cut, rel_tol=1e-5)
    x = torch.stack([p[:-1] for p in pieces[1:]]).float()
    nll, _ = model.frame_nll(x, targets=torch.stack([p[1:] for p in pieces[1:]]).float())
    nll.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.head.offset_logits.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@torch.no_grad()
def test_offset_frequencies_match_the_weights(temperature):
    layer = _layer(False, window=3, seed=7)
    with torch.no_grad():
        layer.repeat_gate.weight.zero_()
        layer.repeat_gate.bias.fill_(30.0)  # always the copy: the offset is all that is drawn
    state = torch.randn(3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    history = torch.tensor([A, B, C], dtype=torch.float64)  # distinct: the frame names the offset
    n = 30_000
    drawn = layer.sample(state.expand(n, 3), temperature, generator=torch.Generator().manual_seed(0),
                         inputs=history[0].expand(n, K), history=history.expand(n, 3, K),
                         history_valid=torch.ones(n, 3, dtype=torch.bool))
    counts = torch.stack([(drawn == history[k].to(torch.uint8)).all(1).double().mean() for k in range(3)])
    w = torch.softmax(layer.offset_logits(state) / temperature, 0)
    assert math.isclose(float(counts.sum()), 1.0)
    assert bool(((counts - w).abs() <= 4 * torch.sqrt(w * (1 - w) / n) + 1e-3).all())
    # the whole frame's frequencies against p, with a duplicate in the window and the real gate
    layer = _layer(True, window=3, seed=8)
    inputs = torch.tensor([[A, B, A]], dtype=torch.float64)
    state = torch.randn(1, 3, 3, dtype=torch.float64)
    cand, valid = layer.candidates(inputs)
    frames = _all_frames()
    probs = layer.log_prob(state.expand(len(frames), 3, 3), frames[:, None, :].expand(len(frames), 3, K),
                           inputs.expand(len(frames), 3, K))[:, 2].exp()
    drawn = layer.sample(state[0, 2].expand(n, 3), 1.0, generator=torch.Generator().manual_seed(1),
                         inputs=inputs[0, 2].expand(n, K), history=cand[0, 2].double().expand(n, 3, K),
                         history_valid=valid[0, 2].expand(n, 3))
    freq = torch.bincount((drawn.long() * torch.tensor([8, 4, 2, 1])).sum(1), minlength=2**K).double() / n
    assert bool(((freq - probs).abs() <= 4 * torch.sqrt(probs * (1 - probs) / n) + 1e-3).all())


@torch.no_grad()
def test_polyphony_cap_and_start_of_piece_mask_offsets():
    layer = _layer(False, window=3, seed=9)
    with torch.no_grad():
        layer.repeat_gate.weight.zero_()
        layer.repeat_gate.bias.fill_(30.0)
        layer.offset_logits.weight.zero_()
        layer.offset_logits.bias.copy_(torch.tensor([0.0, 5.0, 0.0]))  # offset 2 (B, three keys) favoured
    n = 200
    state = torch.randn(n, 3, dtype=torch.float64)
    history = torch.tensor([A, B, C], dtype=torch.float64).expand(n, 3, K)
    ones = torch.ones(n, 3, dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    capped = layer.sample(state, 1.0, max_polyphony=2, generator=gen, inputs=history[:, 0], history=history,
                          history_valid=ones)
    assert not (capped == history[0, 1].to(torch.uint8)).all(1).any()  # B has three keys: never copied
    assert bool(((capped == history[0, 0].to(torch.uint8)).all(1) | (capped == history[0, 2].to(torch.uint8)).all(1)).all())
    greedy = layer.sample(state, 0.0, inputs=history[:, 0], history=history, history_valid=ones)
    assert torch.equal(greedy, history[:, 1].to(torch.uint8))  # greedy: the copy, at the likeliest offset
    start = ones.clone()
    start[:, 1:] = False  # the first step of a piece: only the frame read exists
    first = layer.sample(state, 1.0, generator=gen, inputs=history[:, 0], history=history, history_valid=start)
    assert torch.equal(first, history[:, 0].to(torch.uint8))
    all_capped = layer.sample(state, 1.0, max_polyphony=1, generator=torch.Generator().manual_seed(0),
                              inputs=history[:, 0], history=history, history_valid=ones)
    inner = NADEOutput.sample(layer, state, 1.0, 1, torch.Generator().manual_seed(0), history[:, 0])
    assert torch.equal(all_capped, inner)  # nothing may be copied: the NADE's frame


def test_generate_returns_to_the_primer():
    from lapmusic.sampling.sample import generate

    torch.manual_seed(0)
    model = PianoRollRNN.from_config(ModelConfig(6, output="nade", nade_hidden=4, nade_repeat=True,
                                                 nade_repeat_window=2))
    with torch.no_grad():
        model.head.repeat_gate.bias.fill_(30.0)
        model.head.offset_logits.bias.copy_(torch.tensor([-30.0, 30.0]))  # always the frame before the last
    primer = np.zeros((2, 88), dtype=np.uint8)
    primer[0, [39, 43, 46]] = 1
    primer[1, [41, 45]] = 1
    roll = generate(model, steps=6, seed=0, primer=primer, n_samples=2)
    assert (roll[:, 2::2] == primer[0]).all() and (roll[:, 3::2] == primer[1]).all()  # A B A B ...
    # from silence only the zero frame exists at the first step: the copy is silence
    assert generate(model, steps=4, seed=0).sum() == 0


def test_repeat_share_window_and_config_checks():
    a, b = [1, 0], [0, 1]
    pieces = [np.array([a, b, a, a, b])]
    assert math.isclose(repeat_share(pieces), 1 / 4) and math.isclose(repeat_share(pieces, 2), 2 / 4)
    assert math.isclose(repeat_share(pieces, 3), 3 / 4)  # the last b equals the first, three frames back
    TrainConfig(model=ModelConfig(output="nade", nade_repeat=True, nade_repeat_window=8)).validate()
    with pytest.raises(LapMusicError, match="nade_repeat_window needs nade_repeat"):
        TrainConfig(model=ModelConfig(output="nade", nade_repeat_window=8)).validate()
    with pytest.raises(LapMusicError, match="nade_repeat_window must be an integer from 1 to 4,096, not 0"):
        TrainConfig(model=ModelConfig(output="nade", nade_repeat=True, nade_repeat_window=0)).validate()
    old = TrainConfig(model=ModelConfig(output="nade", nade_repeat=True)).to_dict()
    del old["nade_repeat_window"]  # a run folder written before the option existed
    assert TrainConfig.from_dict(old).model.nade_repeat_window == 1
    with pytest.raises(LapMusicError, match="nade_repeat_window needs nade_repeat"):
        PianoRollRNN.from_config(ModelConfig(4, output="nade", nade_repeat_window=2))


def test_training_run_and_load(tmp_path):
    from lapmusic.sampling.sample import generate
    from lapmusic.training.results import load_run
    from lapmusic.training.train import train

    rng = np.random.default_rng(0)
    chords = (rng.random((4, 88)) < 0.05).astype(np.uint8)
    data = SimpleNamespace(key="toy", train=[chords[rng.integers(0, 4, 30)] for _ in range(6)],
                           valid=[chords[rng.integers(0, 4, 20)] for _ in range(2)],
                           test=[chords[rng.integers(0, 4, 20)] for _ in range(2)])
    config = TrainConfig(dataset="toy", model=ModelConfig(hidden=8, output="nade", nade_hidden=4, nade_vocab=4,
                                                          nade_repeat=True, nade_repeat_window=3),
                         init="random", epochs=2, batch_size=4, bptt=7, device="cpu")
    final = train(config, tmp_path / "run", dataset=data)
    assert math.isfinite(final["nll"])
    run = load_run(tmp_path / "run")
    assert run.model.head.window == 3
    roll = generate(run.model, steps=12, seed=0, max_polyphony=3)
    assert roll.shape == (1, 12, 88) and int(roll.sum(-1).max()) <= 3
