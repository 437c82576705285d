"""The data matrix Xi of an LAE (one row per time step, the reversed prefix) and its helpers."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lapmusic import N_KEYS
from lapmusic.core.errors import LapMusicError, SolverError
from lapmusic.data.midi import check_roll


# ------------------------------------------------------------------------------------------ input
def validate_sequences(seqs) -> list[np.ndarray]:
    """Check training pieces: a non-empty list of ``(T, 88)`` 0/1 arrays with ``T >= 2``.

    Returns them as uint8 arrays. A piece of 0 or 1 frames is refused (it has no transition to
    learn and is almost always a loading mistake); the message names the piece.
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
    """The number of lag blocks ``L``: ``max_lag`` clamped to the longest piece (default: the longest)."""
    longest = max(x.shape[0] for x in seqs)
    if max_lag is None:
        return longest
    if isinstance(max_lag, bool) or int(max_lag) != max_lag or max_lag < 1:
        raise SolverError(f"max_lag must be a positive integer, got {max_lag!r}")
    return min(int(max_lag), longest)


def active_keys(seqs: Sequence[np.ndarray]) -> np.ndarray:
    """Indices of the keys that sound at least once: the other columns of ``Xi`` are all zero."""
    used = np.zeros(N_KEYS, dtype=bool)
    for x in seqs:
        used |= x.any(axis=0)
    return np.flatnonzero(used)


def xi_energy(seqs: Sequence[np.ndarray], max_lag: int, decay: float = 1.0) -> float:
    """``||Xi||_F^2`` without ``Xi``: frame ``u`` of a piece of length ``T`` appears in ``m = min(L, T-u)`` rows,
    at lags ``0..m-1``, so it adds ``sum_k decay^(2k) = (1 - decay^(2m)) / (1 - decay^2)`` (``m`` when 1)."""
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
    """``(L,)`` weights ``decay**k`` of the lag blocks ``k = 0..L-1`` of the weighted ``Xi``."""
    return float(decay) ** np.arange(lags, dtype=np.float64)


def build_xi(seqs: Sequence[np.ndarray], max_lag: int | None = None, *, keys=None,
             dtype=np.float64, decay: float = 1.0) -> np.ndarray:
    """The data matrix ``Xi`` ``(N, len(keys) * L)``: row ``t`` of a piece = ``[x_t, x_{t-1}, ..., x_1, 0...]``.

    Column block ``k`` (``len(keys)`` columns, default all 88) holds lag ``k``, times ``decay**k``. Meant for small data,
    the exact solver and tests: the approx solver never calls it.
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
    """Flip each column so that its largest-magnitude entry is positive (SVD signs are arbitrary)."""
    if U.size == 0:
        return U
    pivots = np.argmax(np.abs(U), axis=0)
    signs = np.sign(U[pivots, np.arange(U.shape[1])])
    signs[signs == 0] = 1.0
    return U * signs
