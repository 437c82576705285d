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
STATE_BATCH = 64  # pieces per forward pass of collect_states


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
    usable = [np.asarray(seq) for seq in seqs if len(seq) >= 2]
    if not usable:
        raise ValueError("no piece has two or more frames: nothing to fit the readout on")
    # Pieces of similar length share a forward pass, zero-padded at the end: a state sees only the frames before
    # it, so the padding changes no kept state, and the batch's one matrix product per step replaces B small ones.
    states = [None] * len(usable)
    order = sorted(range(len(usable)), key=lambda i: len(usable[i]))
    for first in range(0, len(order), STATE_BATCH):
        group = order[first: first + STATE_BATCH]
        x = torch.zeros(len(group), max(len(usable[i]) for i in group) - 1, usable[group[0]].shape[1])
        for row, i in enumerate(group):
            x[row, : len(usable[i]) - 1] = torch.as_tensor(usable[i][:-1], dtype=torch.float32)
        h, _ = model.hidden_states(x.to(device))
        for row, i in enumerate(group):
            states[i] = h[row, : len(usable[i]) - 1]
    targets = [torch.as_tensor(seq[1:], dtype=torch.float32, device=device) for seq in usable]
    inputs = [torch.as_tensor(seq[:-1], dtype=torch.float32, device=device) for seq in usable] if with_inputs else []
    H = torch.cat(states)
    Y = torch.cat(targets)
    X = torch.cat(inputs) if with_inputs else None
    if max_frames is not None and len(H) > max_frames:
        generator = torch.Generator().manual_seed(seed)
        keep = torch.randperm(len(H), generator=generator)[:max_frames].to(device)
        H, Y = H[keep], Y[keep]
        X = X[keep] if with_inputs else None
    return (H, Y, X) if with_inputs else (H, Y)


READOUT_CHUNK = 8192  # rows per chunk of the readout fit: its (rows, 88) temporaries stay a few MiB, reused
HALVINGS = 12  # step sizes 1, 1/2, ..., 1/2048 of the least-squares step, tried per key


def _feature_chunks(H: torch.Tensor, dtype: torch.dtype):
    """``(rows, [H_rows, 1])`` per chunk of :data:`READOUT_CHUNK` rows, the design matrix in ``dtype``."""
    for first in range(0, H.shape[0], READOUT_CHUNK):
        rows = slice(first, first + READOUT_CHUNK)
        part = H[rows].to(dtype)
        yield rows, torch.cat([part, torch.ones(part.shape[0], 1, dtype=dtype, device=part.device)], dim=1)


def _bce_sums(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-key sums ``(88,)`` of the binary cross-entropy of ``logits`` against 0/1 ``targets``."""
    return nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(0)


def _least_squares_readout(H, Y, ridge: float):
    """Step 1 of :func:`fit_readout`: the ridge IRLS step from the constant model and its per-key step sizes.

    Returns the weights ``(p + 1, 88)`` (float64, bias last), their per-key objective ``(88,)`` and the
    ridge's per-frame weight ``lambda``.
    """
    n, p = H.shape
    dtype = torch.float64
    m = Y.double().mean(0).clamp(1e-4, 1 - 1e-4)
    base_logit = torch.log(m / (1 - m))
    gram = torch.zeros(p + 1, p + 1, dtype=dtype, device=H.device)
    moment = torch.zeros(p + 1, Y.shape[1], dtype=dtype, device=H.device)
    for rows, design in _feature_chunks(H, dtype):
        working = base_logit + (Y[rows].double() - m) / (m * (1 - m))  # the IRLS working response
        gram += design.T @ design
        moment += design.T @ working
    strength = ridge * torch.trace(gram) / (p + 1)
    reg = strength * torch.eye(p + 1, dtype=dtype, device=H.device)
    reg[-1, -1] = 0.0  # never shrink the intercept
    solution = torch.linalg.solve(gram + reg, moment)  # (p+1, 88)
    start = torch.zeros_like(solution)
    start[-1] = base_logit
    direction = solution - start
    penalty = float(strength) / n  # per-frame weight of ||W||^2
    # Each key's objective along start + s * direction, for s = 0 (the start) and 1, 1/2, ..., 1/2^11: the
    # start's logits are base_logit in every row, so one product per chunk gives every step's logits.
    steps = torch.tensor([0.0] + [0.5**i for i in range(HALVINGS)], dtype=dtype, device=H.device)
    nll = torch.zeros(len(steps), Y.shape[1], dtype=dtype, device=H.device)
    for rows, design in _feature_chunks(H, dtype):
        change, targets = design @ direction, Y[rows].double()
        for i, step in enumerate(steps):
            nll[i] += _bce_sums(base_logit + step * change, targets)
    objective = nll / n + penalty * steps[:, None] ** 2 * direction[:-1].pow(2).sum(0)  # start's W is 0
    best_step, best_loss = torch.zeros_like(base_logit), objective[0]
    for i in range(1, len(steps)):  # keep, per key, the first step size that lowers its objective most
        better = objective[i] < best_loss
        best_step = torch.where(better, steps[i], best_step)
        best_loss = torch.where(better, objective[i], best_loss)
    return (start + best_step * direction).contiguous(), best_loss, penalty  # solve's result is column-major


def _logistic_objective(design32: torch.Tensor, Y: torch.Tensor, weights: torch.Tensor, penalty: float):
    """``mean_n sum_k BCE + penalty ||W||_F^2`` of the readout ``weights`` ``(p + 1, 88)`` and its gradient,
    by chunks of rows: ``d/dlogits BCE = sigmoid(logits) - y``, so the gradient is ``design^T (sigmoid - Y) / n``
    plus the ridge's ``2 penalty W`` (the bias row unpenalised)."""
    n = design32.shape[0]
    total = torch.zeros((), dtype=torch.float64, device=weights.device)
    grad = torch.zeros_like(weights, memory_format=torch.contiguous_format)  # L-BFGS flattens it with .view
    for first in range(0, n, READOUT_CHUNK):
        design, targets = design32[first: first + READOUT_CHUNK], Y[first: first + READOUT_CHUNK]
        logits = design @ weights
        total += _bce_sums(logits, targets).sum().double()
        grad += design.T @ torch.sigmoid(logits).sub_(targets)
    grad /= n
    grad[:-1] += (2 * penalty) * weights[:-1]
    return float(total) / n + penalty * float(weights[:-1].double().pow(2).sum()), grad


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
    Both steps run over chunks of :data:`READOUT_CHUNK` rows (step 1 in float64, step 2 in float32 with its
    gradient in closed form), so no ``(N, 88)`` temporary is made.

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
    Y = Y.float()
    best, best_loss, penalty = _least_squares_readout(H, Y, ridge)
    if progress:
        progress(0.2 if logistic_steps else 1.0, f"readout: least squares, NLL {best_loss.sum().item():.3f}")
    least_squares = best.float()
    weights = least_squares.clone()
    if logistic_steps > 0:
        design32 = torch.cat([H.float(), torch.ones(H.shape[0], 1, device=H.device)], dim=1)
        weights.requires_grad_(True)
        optimizer = torch.optim.LBFGS([weights], lr=1.0, max_iter=logistic_steps, history_size=10,
                                      line_search_fn="strong_wolfe")

        def closure():
            loss, grad = _logistic_objective(design32, Y, weights.detach(), penalty)
            weights.grad = grad
            return torch.tensor(loss, dtype=torch.float64)

        optimizer.step(closure)
        refined, _ = _logistic_objective(design32, Y, weights.detach(), penalty)
        if not math.isfinite(refined) or refined > best_loss.sum().item():
            # A failed line search can leave L-BFGS worse off; the least-squares fit is then kept.
            weights = least_squares.clone()
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


def fit_chord_logits(H: torch.Tensor, index: torch.Tensor, bias: torch.Tensor, steps: int = 20,
                     ridge: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The chord vocabulary's logits ``z(h) = W_z h + b_z`` fitted on the states to the chords that follow.

    Multinomial logistic regression of the next frame's chord on the state, over the frames whose next frame
    is in the vocabulary (for the others the chord term plays no part), by L-BFGS from ``W_z = 0``,
    ``b_z = bias`` (the vocabulary's log frequencies, :meth:`ChordVocabNADE.set_vocabulary`), with
    :func:`fit_readout`'s ridge: the loss is ``mean_n CE + lambda ||W_z||_F^2`` with ``lambda = ridge``
    times the mean squared entry of ``[H, 1]``. The start is kept when L-BFGS ends no lower.

    Parameters
    ----------
    H : Tensor of shape (N, p)
        States followed by a chord of the vocabulary.
    index : Tensor of shape (N,)
        That chord's row of the vocabulary (int64, ``0 <= index < M``).
    bias : Tensor of shape (M,)
        The start's ``b_z``.
    steps : int
        L-BFGS iterations.
    ridge : float
        The ridge, relative to the mean squared feature.

    Returns
    -------
    W : Tensor of shape (M, p)
        float32.
    b : Tensor of shape (M,)
        float32.
    """
    design = torch.cat([H.float(), torch.ones(H.shape[0], 1, device=H.device)], dim=1)
    penalty = ridge * float(design.double().pow(2).mean())
    start = torch.zeros(design.shape[1], len(bias), device=H.device)
    start[-1] = bias.float()

    def objective(weights):  # mean CE + ridge and its gradient, design^T (softmax - onehot) / n, by chunks
        total, grad = 0.0, torch.zeros_like(weights)
        for first in range(0, len(design), READOUT_CHUNK):
            rows, chords = design[first: first + READOUT_CHUNK], index[first: first + READOUT_CHUNK]
            log_p = torch.log_softmax(rows @ weights, dim=1)
            total -= float(log_p.gather(1, chords[:, None]).sum())
            residual = log_p.exp_()
            residual[torch.arange(len(chords), device=H.device), chords] -= 1.0
            grad += rows.T @ residual
        grad /= len(design)
        grad[:-1] += 2 * penalty * weights[:-1]
        return total / len(design) + penalty * float(weights[:-1].double().pow(2).sum()), grad

    if steps <= 0 or not len(design):
        return start[:-1].T.contiguous(), start[-1].contiguous()
    weights = start.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([weights], lr=1.0, max_iter=steps, history_size=10, line_search_fn="strong_wolfe")

    def closure():
        loss, weights.grad = objective(weights.detach())
        return torch.tensor(loss, dtype=torch.float64)

    optimizer.step(closure)
    fitted = weights.detach()
    loss = objective(fitted)[0]
    if not math.isfinite(loss) or loss >= objective(start)[0]:
        fitted = start  # a failed line search can leave L-BFGS worse off
    return fitted[:-1].T.contiguous(), fitted[-1].contiguous()
