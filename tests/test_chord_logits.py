"""The chord vocabulary's logits fitted on the LAE's states (fit_chord_logits, TrainConfig.vocab_fit_steps)."""

from __future__ import annotations

import numpy as np
import torch
from conftest import chorale_like_piece, synthetic_config

from lapmusic.model.config import ModelConfig
from lapmusic.model.lae_init import collect_states, fit_chord_logits
from lapmusic.model.rnn import PianoRollRNN
from lapmusic.training.pretrain import initialise


def _loss(H, index, W, b, ridge):
    """The fit's objective written directly: mean cross-entropy plus the ridge on W (autograd-ready)."""
    design = torch.cat([H, torch.ones(len(H), 1)], dim=1)
    penalty = ridge * design.pow(2).mean()
    return torch.nn.functional.cross_entropy(H @ W.T + b, index) + penalty * W.pow(2).sum()


def _problem(n=300, p=6, chords=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    H = torch.randn(n, p, generator=generator)
    truth = torch.randn(chords, p, generator=generator) * 2
    index = torch.distributions.Categorical(logits=H @ truth.T).sample()
    bias = torch.log(torch.bincount(index, minlength=chords).float().clamp(min=1) / n)
    return H, index, bias


def test_the_fit_is_the_objectives_minimum():
    H, index, bias = _problem()
    W, b = fit_chord_logits(H, index, bias, steps=200, ridge=0.01)
    W, b = W.clone().requires_grad_(True), b.clone().requires_grad_(True)
    loss = _loss(H, index, W, b, 0.01)
    loss.backward()
    assert W.grad.abs().max() < 1e-3 and b.grad.abs().max() < 1e-3  # stationary: the convex loss's minimum
    start = _loss(H, index, torch.zeros_like(W), bias, 0.01)
    assert loss < start - 0.3  # and far below the frequencies the vocabulary starts from


def test_a_larger_ridge_gives_smaller_weights_and_zero_steps_the_start():
    H, index, bias = _problem()
    small = fit_chord_logits(H, index, bias, steps=100, ridge=0.001)[0].norm()
    large = fit_chord_logits(H, index, bias, steps=100, ridge=1.0)[0].norm()
    assert large < small
    W, b = fit_chord_logits(H, index, bias, steps=0)
    assert torch.equal(W, torch.zeros(len(bias), H.shape[1])) and torch.equal(b, bias)


def test_the_lae_start_fits_the_chord_logits_only_when_asked(tmp_path):
    rng = np.random.default_rng(0)
    pieces = [chorale_like_piece(rng, 48) for _ in range(12)]
    model_fields = dict(hidden=12, output="nade", nade_hidden=8, nade_vocab=8)
    losses = {}
    for steps in (0, 30):
        config = synthetic_config(**model_fields, init="lae", vocab_fit_steps=steps)
        assert config.model == ModelConfig(**model_fields)
        model = PianoRollRNN.from_config(config.model)
        model.head.prepare(pieces)
        initialise(model, config, pieces, tmp_path / f"run{steps}", torch.device("cpu"), lambda *a: None)
        H, Y = collect_states(model, pieces)
        chord = model.head.vocab_index(Y)
        known = chord >= 0
        with torch.no_grad():
            losses[steps] = float(torch.nn.functional.cross_entropy(model.head.chord_logits(H[known]), chord[known]))
        fitted = bool(model.head.chord_logits.weight.abs().sum() > 0)
        assert fitted == (steps > 0)  # 0: the frequencies, the same for every state
    # Lower on the states it was fitted on (the melody note on top is random: about log 8 nats stay).
    assert losses[30] < losses[0]
