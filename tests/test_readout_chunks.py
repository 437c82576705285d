"""The LAE start's readout fit by chunks of rows and its states by batches of pieces, against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lapmusic.model import lae_init
from lapmusic.model.config import ModelConfig
from lapmusic.model.lae_init import collect_states, fit_readout
from lapmusic.model.rnn import PianoRollRNN


def _data(n=300, p=4, keys=5, seed=0):
    """States and next frames: keys 0-2 follow a logistic model, keys 3-4 are rare (a full Newton step overshoots)."""
    rng = np.random.default_rng(seed)
    H = rng.normal(size=(n, p))
    Y = (rng.random((n, keys)) < 1 / (1 + np.exp(-(H @ rng.normal(size=(keys, p)).T)))).astype(np.float32)
    Y[:, 3:] = 0
    Y[rng.choice(n, 2, replace=False), 3] = 1
    Y[rng.choice(n, 1), 4] = 1
    return torch.tensor(H, dtype=torch.float32), torch.tensor(Y)


def test_collect_states_in_batches_equals_one_piece_at_a_time(monkeypatch):
    torch.manual_seed(0)
    model = PianoRollRNN.from_config(ModelConfig(8))
    rng = np.random.default_rng(1)
    pieces = [(rng.random((T, 88)) < 0.1).astype(np.uint8) for T in (7, 2, 30, 1, 4, 15, 7, 3)]  # one too short
    monkeypatch.setattr(lae_init, "STATE_BATCH", 3)
    H, Y, X = collect_states(model, pieces, with_inputs=True)
    with torch.no_grad():  # brute force: every piece alone, in the given order
        alone = [model.hidden_states(torch.as_tensor(x[:-1], dtype=torch.float32)[None])[0][0]
                 for x in pieces if len(x) >= 2]
    np.testing.assert_allclose(H.numpy(), torch.cat(alone).numpy(), atol=1e-6)
    np.testing.assert_array_equal(Y.numpy(), np.concatenate([x[1:] for x in pieces if len(x) >= 2]))
    np.testing.assert_array_equal(X.numpy(), np.concatenate([x[:-1] for x in pieces if len(x) >= 2]))


def test_least_squares_step_size_is_the_best_halving_per_key_by_brute_force(monkeypatch):
    H, Y = _data()
    monkeypatch.setattr(lae_init, "READOUT_CHUNK", 7)  # many chunks, a short last one
    ridge = 0.01
    W, c = fit_readout(H, Y, logistic_steps=0, ridge=ridge)
    # By hand in numpy: the IRLS step from the constant model, then per key the step size among 1, 1/2, ...,
    # 1/2048 with the lowest objective, kept only when below the constant model's.
    h, y = H.double().numpy(), Y.double().numpy()
    n, p = h.shape
    design = np.hstack([h, np.ones((n, 1))])
    m = np.clip(y.mean(0), 1e-4, 1 - 1e-4)
    base = np.log(m / (1 - m))
    gram = design.T @ design
    strength = ridge * np.trace(gram) / (p + 1)
    reg = strength * np.eye(p + 1)
    reg[-1, -1] = 0
    solution = np.linalg.solve(gram + reg, design.T @ (base + (y - m) / (m * (1 - m))))
    start = np.zeros_like(solution)
    start[-1] = base

    def objective(weights):
        z = design @ weights
        return (np.logaddexp(0, z) - y * z).mean(0) + strength / n * (weights[:-1] ** 2).sum(0)

    expected = start.copy()
    best = objective(start)
    for step in 0.5 ** np.arange(12):
        candidate = start + step * (solution - start)
        loss = objective(candidate)
        expected[:, loss < best] = candidate[:, loss < best]
        best = np.minimum(loss, best)
    assert not np.allclose(expected, solution)  # some key took less than the full step (or none at all)
    np.testing.assert_allclose(W.double().numpy(), expected[:-1].T, atol=1e-6)
    np.testing.assert_allclose(c.double().numpy(), expected[-1], atol=1e-6)


def test_logistic_objective_by_chunks_is_the_loss_and_its_autograd_gradient(monkeypatch):
    H, Y = _data(n=50, seed=2)
    design = torch.cat([H, torch.ones(len(H), 1)], dim=1)
    weights = torch.randn(H.shape[1] + 1, Y.shape[1], generator=torch.Generator().manual_seed(3))
    penalty = 0.03
    monkeypatch.setattr(lae_init, "READOUT_CHUNK", 7)
    loss, grad = lae_init._logistic_objective(design, Y, weights, penalty)
    w = weights.double().requires_grad_(True)
    reference = torch.nn.functional.binary_cross_entropy_with_logits(design.double() @ w, Y.double(),
                                                                     reduction="sum") / len(H)
    reference = reference + penalty * w[:-1].pow(2).sum()
    reference.backward()
    assert loss == pytest.approx(reference.item(), rel=1e-6)
    np.testing.assert_allclose(grad.numpy(), w.grad.numpy(), atol=1e-6)


def test_readout_fit_by_chunks_reaches_the_optimum(monkeypatch):
    # L-BFGS follows another path when the sums are split otherwise (float32 rounding steers its line search),
    # so the weights after a few steps differ by ~1e-3; what must hold is that it ends at the optimum.
    from scipy.optimize import minimize

    H, Y = _data(n=400, seed=4)
    monkeypatch.setattr(lae_init, "READOUT_CHUNK", 9)
    ridge = 0.01
    W, c = fit_readout(H, Y, logistic_steps=100, ridge=ridge)
    h, y = H.double().numpy(), Y.double().numpy()
    n, p = h.shape
    keys = y.shape[1]
    penalty = ridge * ((h**2).sum() + n) / (p + 1) / n

    def objective(flat):
        z = h @ flat[: keys * p].reshape(keys, p).T + flat[keys * p:]
        return (np.logaddexp(0, z) - y * z).sum(1).mean() + penalty * (flat[: keys * p] ** 2).sum()

    ours = objective(np.concatenate([W.double().numpy().ravel(), c.double().numpy()]))
    best = minimize(objective, np.zeros(keys * (p + 1)), method="BFGS", options={"gtol": 1e-8}).fun
    assert ours == pytest.approx(best, abs=1e-4)
