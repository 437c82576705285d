"""Initialising the RNN from a linear autoencoder (LAE), and fitting its readout to the network's states.

The recipe (:func:`lapmusic.training.pretrain.initialise`): :func:`init_from_lae` copies ``A`` and ``B`` into
the recurrent layer with the input scale of :func:`choose_alpha`, :func:`collect_states` runs the network over
the training pieces, :func:`fit_readout` fits the readout to the next frames, ``model.head.set_readout``
installs it.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from lapmusic.model.rnn import PianoRollRNN


# ------------------------------------------------------------------------------------------ LAE init
def lae_state_scale(lae, seqs: Sequence[np.ndarray], quantile: float = 0.99, max_pieces: int = 200) -> float:
    """The ``quantile`` of ``|y_t|`` over every LAE state of (up to ``max_pieces`` of) ``seqs``."""
    pieces = list(seqs)[:max_pieces]
    states = lae.encode(pieces)
    values = np.concatenate([np.abs(np.asarray(s, dtype=np.float64)).ravel() for s in states])
    scale = float(np.quantile(values, quantile)) if values.size else 0.0
    return scale


def choose_alpha(lae, seqs: Sequence[np.ndarray], target: float = 1.5, quantile: float = 0.99) -> float:
    """The input scale ``alpha`` of the LAE init: the ``quantile`` of ``|alpha * y_t|`` is ``target``.

    The LAE states are heavy-tailed, so most pre-activations ``alpha * y_t`` then lie well inside the
    near-linear part of ``tanh``, where the network reproduces the LAE states (docs/models.md).

    Parameters
    ----------
    lae : LinearAutoencoder
        Anything with ``encode(pieces)`` giving each piece's ``(T, p)`` states ``y_t``.
    seqs : sequence of array of shape (T, 88)
        The training pieces (the first 200 are used).
    target : float
        The bound on ``|alpha * y_t|`` at the ``quantile``.
    quantile : float
        Which quantile of ``|y_t|`` over every state and unit.

    Returns
    -------
    float
        ``target / quantile(|y_t|)``; 1.0 when the states are all zero or not finite.
    """
    scale = lae_state_scale(lae, seqs, quantile=quantile)
    if not math.isfinite(scale) or scale <= 0:
        return 1.0
    return target / scale


def spectral_radius(matrix) -> float:
    """Largest ``|eigenvalue|`` of a square matrix (numpy or torch)."""
    array = matrix.detach().cpu().double().numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix)
    return float(np.abs(np.linalg.eigvals(array)).max()) if array.size else 0.0


def scale_recurrent(model: PianoRollRNN, radius: float) -> float:
    """Scale ``W_rec`` (in place) so that its spectral radius is exactly ``radius``; returns the old radius.

    ``TrainConfig.rec_radius`` for both inits: the radius sets how fast the network's memory fades.
    """
    if model.cell != "rnn":
        raise ValueError("rec_radius is defined for the Elman cell (cell='rnn') only")
    weight = model.recurrent.weight_hh_l0
    old = spectral_radius(weight)
    if old > 0:
        with torch.no_grad():
            weight.mul_(radius / old)
    return old


def init_from_lae(model: PianoRollRNN, lae, alpha: float, max_spectral_radius: float | None = None) -> None:
    """Make the Elman RNN compute the LAE's states: ``W_in = alpha * A``, ``W_rec = B`` (in place).

    The pre-activation is then ``alpha * A x_t + B h_{t-1}``; while the ``tanh`` stays near-linear,
    ``h_t ~= alpha * y_t`` with ``y_t = A x_t + B y_{t-1}`` the LAE's state (the recursion is linear, so scaling
    the input scales every state). The recurrent biases are zero, or ``-alpha * A @ mean`` for an LAE that
    centres its input (an attribute ``mean`` of shape ``(88,)``).

    Parameters
    ----------
    model : PianoRollRNN
        With ``cell="rnn"`` and ``hidden == p``.
    lae : LinearAutoencoder
        ``A`` of shape ``(p, 88)``, ``B`` of shape ``(p, p)``.
    alpha : float
        The input scale (:func:`choose_alpha`).
    max_spectral_radius : float, optional
        When ``B``'s spectral radius exceeds it, ``W_rec`` is ``B`` scaled down to it (the LAE's ``B`` is close
        to a shift, radius near 1: dynamics the first gradient steps can push into explosion). ``None`` keeps
        ``B`` exactly.

    Raises
    ------
    ValueError
        For a GRU or LSTM, or an LAE whose ``p`` is not the network's ``hidden``.
    """
    if model.cell != "rnn":
        raise ValueError("LAE initialisation is defined for the Elman cell (cell='rnn') only")
    A = np.asarray(lae.A, dtype=np.float64)
    B = np.asarray(lae.B, dtype=np.float64)
    if max_spectral_radius is not None and B.size:
        radius = float(np.abs(np.linalg.eigvals(B)).max())
        if radius > max_spectral_radius:
            B = B * (max_spectral_radius / radius)
    if A.shape != (model.hidden, model.n_keys) or B.shape != (model.hidden, model.hidden):
        raise ValueError(
            f"LAE shapes A {A.shape}, B {B.shape} do not fit a network with {model.hidden} hidden units "
            f"and {model.n_keys} keys; fit the LAE with p = hidden"
        )
    bias = np.zeros(model.hidden)
    mean = getattr(lae, "mean", None)
    if mean is not None:
        bias = -alpha * (A @ np.asarray(mean, dtype=np.float64))
    rnn = model.recurrent
    with torch.no_grad():  # (scaling to an exact radius: scale_recurrent after this call)
        rnn.weight_ih_l0.copy_(torch.as_tensor(alpha * A, dtype=rnn.weight_ih_l0.dtype))
        rnn.weight_hh_l0.copy_(torch.as_tensor(B, dtype=rnn.weight_hh_l0.dtype))
        rnn.bias_ih_l0.copy_(torch.as_tensor(bias, dtype=rnn.bias_ih_l0.dtype))
        rnn.bias_hh_l0.zero_()


# ------------------------------------------------------------------------------------------ readout fit
@torch.no_grad()
def collect_states(
    model: PianoRollRNN,
    seqs: Sequence[np.ndarray],
    device: torch.device | str = "cpu",
    max_frames: int | None = None,
    seed: int = 0,
    with_inputs: bool = False,
):
    """Hidden states ``H`` ``(N, hidden)`` after frames ``1..T-1`` and their next frames ``Y`` ``(N, 88)``.

    With ``max_frames``, a random subset of ``max_frames`` (state, next frame) pairs is kept (seeded).
    ``with_inputs``: returns ``(H, Y, X)`` with ``X`` ``(N, 88)`` the frame each state has just read (the
    readout skip's feature), the same rows kept.
    """
    device = torch.device(device)
    states, targets, inputs = [], [], []
    for seq in seqs:
        if len(seq) < 2:
            continue
        x = torch.as_tensor(np.asarray(seq[:-1]), dtype=torch.float32, device=device)[None]
        h, _ = model.hidden_states(x)
        states.append(h[0])
        if with_inputs:
            inputs.append(x[0])
        targets.append(torch.as_tensor(np.asarray(seq[1:]), dtype=torch.float32, device=device))
    if not states:
        raise ValueError("no piece has two or more frames: nothing to fit the readout on")
    H = torch.cat(states)
    Y = torch.cat(targets)
    X = torch.cat(inputs) if with_inputs else None
    if max_frames is not None and len(H) > max_frames:
        generator = torch.Generator().manual_seed(seed)
        keep = torch.randperm(len(H), generator=generator)[:max_frames].to(device)
        H, Y = H[keep], Y[keep]
        X = X[keep] if with_inputs else None
    return (H, Y, X) if with_inputs else (H, Y)


def _mean_key_nll(logits: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Per-key mean binary cross-entropy ``(88,)`` (float64 for stable comparisons)."""
    return nn.functional.binary_cross_entropy_with_logits(logits, Y, reduction="none").double().mean(0)


def fit_readout(
    H: torch.Tensor,
    Y: torch.Tensor,
    logistic_steps: int = 20,
    ridge: float = 1e-3,
    progress: Callable[[float, str], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The readout ``sigmoid(W h + c)`` that best predicts the next frames from the states.

    Step 1 is the paper's least squares, made to suit sigmoid outputs: it is the first Newton (IRLS) step
    of per-key logistic regression from the best constant model ``logit(mean y_k)``, i.e. ridge least
    squares of the working response ``logit(m_k) + (y - m_k) / (m_k (1 - m_k))`` on ``[H, 1]``. Every key
    shares one ``(p+1, p+1)`` system, so it costs one solve. A per-key step size (1, 1/2, 1/4, ...) keeps
    only what lowers that key's training NLL (a Newton step can overshoot on rare keys).
    Step 2 (``logistic_steps > 0``): L-BFGS on the same convex logistic loss, states frozen, with the same
    ridge: the loss is ``mean_n sum_k BCE + lambda ||W||_F^2`` (bias not penalised), ``lambda = ridge *
    trace(H1^T H1) / ((p + 1) N)`` (``H1 = [H, 1]``), i.e. the least-squares ridge per frame; without it the
    fit over-fits small training splits. When L-BFGS ends worse than step 1, step 1's fit is kept.

    Parameters
    ----------
    H : Tensor of shape (N, p)
        States (:func:`collect_states`; the readout skip's joint fit appends the frames read: ``(N, p + 88)``).
    Y : Tensor of shape (N, 88)
        The 0/1 next frames.
    logistic_steps : int
        L-BFGS iterations of step 2 (0: step 1 only).
    ridge : float
        The ridge, relative to the mean squared feature (``lambda`` above).
    progress : callable, optional
        ``progress(fraction, message)`` after each step.

    Returns
    -------
    W : Tensor of shape (88, p)
        float32.
    c : Tensor of shape (88,)
        float32.
    """
    H = H.double()
    Y64 = Y.double()
    n, p = H.shape
    design = torch.cat([H, torch.ones(n, 1, dtype=H.dtype, device=H.device)], dim=1)
    m = Y64.mean(0).clamp(1e-4, 1 - 1e-4)
    base_logit = torch.log(m / (1 - m))
    working = base_logit + (Y64 - m) / (m * (1 - m))
    gram = design.T @ design
    strength = ridge * torch.trace(gram) / (p + 1)
    reg = strength * torch.eye(p + 1, dtype=H.dtype, device=H.device)
    reg[-1, -1] = 0.0  # never shrink the intercept
    solution = torch.linalg.solve(gram + reg, design.T @ working)  # (p+1, 88)
    start = torch.zeros_like(solution)
    start[-1] = base_logit
    best = start.clone()
    penalty = float(strength) / n  # per-frame weight of ||W||^2

    def key_objective(weights):  # (88,): each key's mean BCE plus its share of the ridge
        return _mean_key_nll(design @ weights, Y64) + penalty * weights[:-1].pow(2).sum(0)

    best_loss = key_objective(start)
    step = 1.0
    for _ in range(12):
        candidate = start + step * (solution - start)
        loss = key_objective(candidate)
        better = loss < best_loss
        best[:, better] = candidate[:, better]
        best_loss = torch.where(better, loss, best_loss)
        step /= 2
    if progress:
        progress(0.2 if logistic_steps else 1.0, f"readout: least squares, NLL {best_loss.sum().item():.3f}")
    least_squares = best.float().clone()
    weights = least_squares.clone().requires_grad_(True)
    if logistic_steps > 0:
        design32 = design.float()
        optimizer = torch.optim.LBFGS([weights], lr=1.0, max_iter=logistic_steps, history_size=10,
                                      line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(design32 @ weights, Y, reduction="sum") / n
            loss = loss + penalty * weights[:-1].pow(2).sum()
            loss.backward()
            weights.grad = weights.grad.contiguous()  # L-BFGS flattens gradients with .view
            return loss

        optimizer.step(closure)
        refined = closure().item()
        if not math.isfinite(refined) or refined > best_loss.sum().item():
            # A failed line search can leave L-BFGS worse off; the least-squares fit is then kept.
            weights = least_squares.clone().requires_grad_(True)
        elif progress:
            progress(1.0, f"readout: logistic refinement, NLL {refined:.3f}")
    weights = weights.detach()
    return weights[:-1].T.contiguous().float(), weights[-1].contiguous().float()


def constant_readout(Y: torch.Tensor, hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The best constant model: ``W = 0``, ``c_k = logit(mean y_k)`` (the per-key-frequency baseline).

    ``Y`` ``(N, 88)`` next frames; frequencies are clamped to ``[1e-4, 1 - 1e-4]`` like in :func:`fit_readout`.
    """
    m = Y.double().mean(0).clamp(1e-4, 1 - 1e-4)
    return torch.zeros(Y.shape[1], hidden), torch.log(m / (1 - m)).float()
