"""The data matrix Xi of an LAE and its helpers.

``Xi`` ``(N, 88 L)`` has one row per time step of every piece (``N`` = all frames): row ``t`` of a piece is
its reversed prefix ``[x_t, x_{t-1}, ..., x_1]`` padded with zeros and cut after ``L`` frames, lag block
``k`` (88 columns) holding ``x_{t-k}``, optionally weighted by ``decay**k``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lapmusic import N_KEYS
from lapmusic.core.errors import LapMusicError, SolverError
from lapmusic.data.roll import check_roll


# ------------------------------------------------------------------------------------------ input
def validate_sequences(seqs) -> list[np.ndarray]:
    """Check training pieces: a non-empty list of ``(T, 88)`` 0/1 arrays with ``T >= 2``.

    Parameters
    ----------
    seqs : sequence of array-like of shape (T_i, 88)
        The pieces, 0/1 values of any numeric dtype.

    Returns
    -------
    list of ndarray of shape (T_i, 88)
        The pieces as uint8 arrays.

    Raises
    ------
    LapMusicError
        For a single array instead of a list, an empty list, a piece that is not a 0/1 ``(T, 88)`` array,
        or a piece of 0 or 1 frames (it has no transition to learn and is almost always a loading
        mistake); the message names the piece.
    """
    if seqs is None or isinstance(seqs, np.ndarray) and seqs.ndim == 2:
        raise LapMusicError("expected a list of (T, 88) pieces, not a single array; wrap it: [roll]")
    try:
        pieces = list(seqs)
    except TypeError:
        raise LapMusicError(f"expected a list of (T, 88) pieces, got {type(seqs).__name__}") from None
    if not pieces:
        raise LapMusicError("no training pieces: the dataset (or --max-sequences selection) is empty")
    out = []
    for index, seq in enumerate(pieces):
        x = check_roll(seq, f"piece {index}")
        if x.shape[0] < 2:
            raise LapMusicError(
                f"piece {index} has {x.shape[0]} frame(s); every piece needs at least 2 frames "
                f"(remove empty or one-frame pieces)"
            )
        out.append(x)
    return out


def resolve_max_lag(seqs: Sequence[np.ndarray], max_lag: int | None) -> int:
    """The number of lag blocks ``L``: ``max_lag`` clamped to the longest piece.

    Parameters
    ----------
    seqs : sequence of ndarray of shape (T_i, 88)
        The validated pieces.
    max_lag : int or None
        The lags wanted; None means the longest piece.

    Returns
    -------
    int
        ``min(max_lag, max_i T_i)``.

    Raises
    ------
    SolverError
        ``max_lag`` is not a positive integer.
    """
    longest = max(x.shape[0] for x in seqs)
    if max_lag is None:
        return longest
    if isinstance(max_lag, bool) or int(max_lag) != max_lag or max_lag < 1:
        raise SolverError(f"max_lag must be a positive integer, got {max_lag!r}")
    return min(int(max_lag), longest)


def active_keys(seqs: Sequence[np.ndarray]) -> np.ndarray:
    """Indices ``(K,)`` of the keys that sound at least once in ``seqs``: the other columns of ``Xi`` are
    all zero, so the solvers leave them out."""
    used = np.zeros(N_KEYS, dtype=bool)
    for x in seqs:
        used |= x.any(axis=0)
    return np.flatnonzero(used)


def xi_energy(seqs: Sequence[np.ndarray], max_lag: int, decay: float = 1.0) -> float:
    """``||Xi||_F^2`` without building ``Xi``.

    Frame ``u`` of a piece of length ``T`` appears in ``m = min(L, T - u)`` rows, at lags ``0..m-1``, so
    its ``n_u`` notes add ``n_u sum_k decay^(2k) = n_u (1 - decay^(2m)) / (1 - decay^2)`` (``n_u m`` when
    ``decay = 1``).

    Parameters
    ----------
    seqs : sequence of ndarray of shape (T_i, 88)
        The validated 0/1 pieces.
    max_lag : int
        ``L``, the lag blocks of ``Xi`` (see :func:`resolve_max_lag`).
    decay : float, default=1.0
        Lag ``k`` weighted by ``decay**k``.

    Returns
    -------
    float
        The squared Frobenius norm, i.e. the sum of all squared singular values of ``Xi``.
    """
    total = 0.0
    for x in seqs:
        notes = x.sum(axis=1, dtype=np.int64)  # (T,)
        remaining = np.minimum(x.shape[0] - np.arange(x.shape[0]), max_lag)  # rows t >= u that see frame u
        if decay == 1.0:
            total += float(np.dot(notes, remaining))
        else:
            total += float(np.dot(notes, (1.0 - decay ** (2.0 * remaining)) / (1.0 - decay**2)))
    return float(total)


def lag_weights(lags: int, decay: float) -> np.ndarray:
    """The weights of the lag blocks of the weighted ``Xi``.

    Parameters
    ----------
    lags : int
        ``L``, the number of lag blocks.
    decay : float
        ``gamma`` in ``(0, 1]``.

    Returns
    -------
    ndarray of shape (L,)
        ``gamma**k`` for ``k = 0..L-1``, float64.
    """
    return float(decay) ** np.arange(lags, dtype=np.float64)


def build_xi(seqs: Sequence[np.ndarray], max_lag: int | None = None, *, keys=None,
             dtype=np.float64, decay: float = 1.0) -> np.ndarray:
    """The dense data matrix ``Xi``: row ``t`` of a piece is ``[x_t, x_{t-1}, ..., x_1, 0, ...]``.

    For small data, the exact solver and tests: the approx solver never builds it.

    Parameters
    ----------
    seqs : sequence of array-like of shape (T_i, 88)
        The 0/1 pieces (checked by :func:`validate_sequences`).
    max_lag : int, optional
        ``L``, the lags kept (default and upper bound: the longest piece).
    keys : array-like of int, shape (K,), optional
        The key columns kept in every lag block (default: all 88).
    dtype : numpy dtype, default=np.float64
        The matrix's dtype.
    decay : float, default=1.0
        Lag block ``k`` is multiplied by ``decay**k``.

    Returns
    -------
    ndarray of shape (N, K * L)
        ``N = sum_i T_i`` rows, pieces in order; block ``k`` (columns ``k K .. (k + 1) K - 1``) holds lag ``k``.

    Raises
    ------
    LapMusicError
        A bad piece (:func:`validate_sequences`).
    SolverError
        A bad ``max_lag``.
    """
    seqs = validate_sequences(seqs)
    lags = resolve_max_lag(seqs, max_lag)
    keys = np.arange(N_KEYS) if keys is None else np.asarray(keys)
    width = len(keys)
    rows = sum(x.shape[0] for x in seqs)
    xi = np.zeros((rows, lags * width), dtype=dtype)
    row = 0
    for x in seqs:
        frames = x[:, keys]
        T = frames.shape[0]
        for lag in range(min(lags, T)):
            # Rows t >= lag get frame t - lag in block `lag`.
            xi[row + lag: row + T, lag * width:(lag + 1) * width] = frames[: T - lag] * (float(decay) ** lag)
        row += T
    return xi


def fix_signs(U: np.ndarray) -> np.ndarray:
    """``U`` with each column flipped so that its largest-magnitude entry is positive (SVD signs are
    arbitrary; this makes the factors reproducible across solvers and devices)."""
    if U.size == 0:
        return U
    pivots = np.argmax(np.abs(U), axis=0)
    signs = np.sign(U[pivots, np.arange(U.shape[1])])
    signs[signs == 0] = 1.0
    return U * signs
