"""Bounded evaluation memory: the evaluation scores at most ``EVAL_FRAMES`` frames at once (rows x steps) and
the NADE's key-by-key sampler reuses its buffers; both give the results of the unbounded computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lapmusic.model.config import ModelConfig
from lapmusic.model.rnn import PianoRollRNN
from lapmusic.training import epoch


def _recipe_and_pieces(seed: int = 0):
    torch.manual_seed(seed)
    model = PianoRollRNN.from_config(ModelConfig(8, output="nade", nade_hidden=6, nade_vocab=6, nade_repeat=True,
                                                 nade_repeat_window=4))
    rng = np.random.default_rng(seed)
    chords = (rng.random((5, 88)) < 0.06).astype(np.uint8)
    pieces = [chords[rng.integers(0, 5, n)] for n in (40, 33, 17, 9, 2, 25)]
    model.head.prepare(pieces)
    with torch.no_grad():  # away from the init so that every component matters
        for parameter in model.head.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model, [torch.from_numpy(p) for p in pieces]


@pytest.mark.parametrize("frames", [1, 7, 50])
def test_chunked_evaluation_equals_the_unchunked_one(monkeypatch, frames):
    model, pieces = _recipe_and_pieces()
    monkeypatch.setattr(epoch, "EVAL_FRAMES", 10**9)
    whole = epoch.evaluate_tensors(model, pieces, batch_size=4, acc_samples=200)
    monkeypatch.setattr(epoch, "EVAL_FRAMES", frames)
    chunked = epoch.evaluate_tensors(model, pieces, batch_size=4, acc_samples=200)
    assert chunked["frames"] == whole["frames"] == sum(len(p) - 1 for p in pieces)
    assert math.isclose(chunked["nll"], whole["nll"], rel_tol=1e-6)
    assert math.isclose(chunked["acc"], whole["acc"], rel_tol=1e-9)  # the greedy frame: deterministic
    # expected ACC is a Monte-Carlo estimate whose draws are seeded per window: equal in distribution only
    assert abs(chunked["expected_acc"] - whole["expected_acc"]) < 2.0


def test_window_length_bounds_the_frames():
    assert epoch._window_length(64, 1000) == epoch.EVAL_FRAMES // 64
    assert epoch._window_length(1, 1000) == min(1000, epoch.EVAL_FRAMES)
    assert epoch._window_length(10**6, 1000) == 1
    assert all(rows * epoch._window_length(rows, 1000) <= max(rows, epoch.EVAL_FRAMES) for rows in range(1, 300))


def _reference_sample(nade, states, temperature, max_polyphony, generator):
    """The key-by-key loop written plainly (a new tensor at every step), as the sampler was before."""
    b, a = nade.biases(states)
    b = b.T
    n = len(states)
    if temperature == 0.0:
        thresholds = torch.zeros(nade.n_keys, n, dtype=a.dtype)
    else:
        thresholds = temperature * torch.logit(torch.rand(nade.n_keys, n, generator=generator, dtype=a.dtype))
    count = torch.zeros(n)
    keys = []
    for k in range(nade.n_keys):
        on = ((b[k] + torch.sigmoid(a) @ nade.V[k]) >= thresholds[k]).to(a.dtype)
        if max_polyphony is not None:
            on = on * (count < max_polyphony)
            count += on
        keys.append(on)
        a = a + on[:, None] * nade.W[:, k][None, :]
    return torch.stack(keys, 1).to(torch.uint8)


@pytest.mark.parametrize("temperature,cap", [(1.0, None), (0.0, None), (0.7, 3)])
@torch.no_grad()
def test_in_place_sampler_draws_the_reference_frames(temperature, cap):
    from lapmusic.model.nade import NADEOutput

    torch.manual_seed(1)
    nade = NADEOutput(16, 88, 20)
    nade.V.mul_(5)
    nade.W.mul_(5)
    states = torch.randn(300, 16)
    got = nade.sample(states, temperature, cap, torch.Generator().manual_seed(2))
    want = _reference_sample(nade, states, temperature, cap, torch.Generator().manual_seed(2))
    assert got.dtype == torch.uint8 and torch.equal(got, want)
    assert got.sum() > 0


@pytest.mark.parametrize("window,before", [(1, 0), (4, 0), (4, 2), (6, 5)])
def test_packed_copy_matches_equal_the_key_by_key_comparison(window, before):
    from lapmusic.model.repeatmix import RepeatNADE, pack_frames

    torch.manual_seed(0)
    layer = RepeatNADE(5, 88, 4, window=window)
    rng = np.random.default_rng(window + before)
    chords = (rng.random((3, 88)) < 0.5).astype(np.float32)  # dense: keys above 62 matter too
    chords[1, 87] = 1 - chords[0, 87]
    chords[1, :87] = chords[0, :87]  # differs from chord 0 in the highest key only
    seq = torch.from_numpy(chords[rng.integers(0, 3, (2, 20 + before))])
    past, inputs, frames = seq[:, :before] if before else None, seq[:, before:-1], seq[:, before + 1:]
    if window == 1:
        cand, valid = layer.candidates(inputs)
    else:
        cand, valid = layer.candidates(inputs, past)
    want = ((frames > 0.5).unsqueeze(-2) == cand).all(-1) & valid
    same, got_valid = layer.copy_matches(frames, inputs, past)
    assert torch.equal(got_valid, valid) and torch.equal(same, want)
    assert want.any() and (~want & valid).any()
    assert not torch.equal(pack_frames(torch.from_numpy(chords[:1])), pack_frames(torch.from_numpy(chords[1:2])))


def test_allocator_keeps_freed_memory_on_glibc():
    import platform

    from lapmusic.core.alloc import keep_freed_memory

    first = keep_freed_memory()
    assert keep_freed_memory() is first  # once per process
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert first is True
