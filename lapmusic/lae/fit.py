"""The linear autoencoder for sequences (Pasa & Sperduti, NIPS 2014, section 3).

State recursion, ``y_0 = 0``::

    y_t = A x_t + B y_{t-1}          x_t in R^88 (a piano-roll frame), y_t in R^p

Decoding runs it backwards: ``x_t ~ A^T y_t`` and ``y_{t-1} ~ B^T y_t``, so the final state of a
piece unrolls into the whole piece, last frame first.

The optimal ``A`` and ``B`` come from the data matrix ``Xi`` (``N x 88 L``): one row per time step
``t`` of every training piece, holding the reversed prefix ``[x_t, x_{t-1}, ..., x_1]`` followed by
zeros, cut after ``L`` frames (``L`` = the longest piece, or ``max_lag``). With the thin SVD
``Xi = V Lambda U^T`` and ``U_p`` its first ``p`` right singular vectors, split into ``L`` blocks
``U^(0), U^(1), ...`` of 88 rows::

    A = U^(0)^T                                (p, 88)
    B = sum_i U^(i+1)^T U^(i) = U_p^T R U_p     (p, p), R shifts a row right by one block

With ``p = rank(Xi)`` the states equal ``Xi U_p`` and decoding is exact.

Two solvers:

* ``exact`` builds ``Xi`` (only the columns of keys that occur) in float64 and takes a dense SVD.
  It refuses, before allocating anything, data whose ``Xi`` and SVD would not fit a memory budget.
* ``approx`` (default) is a randomized SVD (subspace iteration) that never builds ``Xi``: a product
  ``Xi W`` is, per piece, a causal convolution of the piece with the lag blocks of ``W``, and
  ``Xi^T Y`` a cross-correlation; both are done with FFTs on pieces bucketed by length (torch, CUDA
  when available, float32 by default), in ``lae_approx.py``. See docs/lae.md for the method and the benchmark.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Sequence

import numpy as np

from lapmusic import N_KEYS
from lapmusic.core.errors import LapMusicError, SolverError
from lapmusic.lae.approx import (
    approx_svd,
)
from lapmusic.lae.autoencoder import LinearAutoencoder
from lapmusic.lae.xi import active_keys, build_xi, fix_signs, resolve_max_lag, validate_sequences, xi_energy

SOLVERS = ("exact", "approx")

ProgressCallback = Callable[[float, str], None]


def exact_memory_bytes(rows: int, columns: int) -> int:
    """Bytes the exact solver needs: ``Xi`` in float64 plus its thin SVD (U, Vt and LAPACK workspace)."""
    k = min(rows, columns)
    return 8 * (rows * columns + rows * k + k * columns + 4 * k * k + 8 * max(rows, columns))


def default_memory_budget() -> int:
    """Half of the machine's physical memory (the exact solver's default budget)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2)
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 4 * 2**30


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**28 else f"{nbytes / 2**20:.0f} MiB"


# ------------------------------------------------------------------------------------------ fitting
def fit_lae(
    seqs: Sequence[np.ndarray],
    p: int,
    *,
    solver: str = "approx",
    max_lag: int | None = None,
    decay: float | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: ProgressCallback | None = None,
    memory_budget_bytes: int | None = None,
    dtype=None,
    iterations: int | None = None,
    oversample: int | None = None,
    cancel=None,
) -> LinearAutoencoder:
    """Fit the linear autoencoder with ``p`` hidden units on ``seqs`` (list of ``(T, 88)`` 0/1 pieces).

    ``solver``: ``"approx"`` (default; randomized, never builds ``Xi``, torch on ``device``) or
    ``"exact"`` (dense SVD of ``Xi``, float64, CPU). ``max_lag`` cuts every reversed prefix after
    that many frames (default: the longest piece; larger values are clamped to it). ``decay`` (``gamma`` in
    ``(0, 1]``, default 1): lag ``k`` of every row is weighted by ``gamma**k``, i.e. ``Xi_gamma = Xi D``; then
    ``A = U^(0)^T`` and ``B = gamma * sum_i U^(i+1)^T U^(i)`` from ``Xi_gamma``'s right singular vectors
    (docs/lae.md, "Lag weighting").
    ``memory_budget_bytes``: ``exact`` refuses data needing more (default: half the RAM);
    ``approx`` sizes its FFT work chunks from it (default 512 MiB). ``dtype``: ``approx`` computes
    in float32 by default (``torch.float64``/``"float64"`` for more accuracy); ``exact`` always uses
    float64. ``iterations`` / ``oversample``: the randomized solver's accuracy knobs.
    ``progress(fraction, message)`` is called as work advances; ``cancel`` (anything with
    ``is_set()``) stops the approx solver between products with a LapMusicError.

    Raises LapMusicError for bad pieces and SolverError for impossible settings, e.g. ``p`` larger
    than the rank of ``Xi`` (the message gives the largest usable ``p``).
    """
    started = time.perf_counter()
    report = progress or (lambda fraction, message: None)
    if solver not in SOLVERS:
        raise SolverError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 1:
        raise SolverError(f"the number of hidden units p must be a positive integer, got {p!r}")
    p = int(p)
    decay = 1.0 if decay is None else float(decay)
    if not 0.0 < decay <= 1.0:
        raise SolverError(f"decay must be in (0, 1], got {decay!r}")
    pieces = validate_sequences(seqs)
    lags = resolve_max_lag(pieces, max_lag)
    keys = active_keys(pieces)
    rows = sum(x.shape[0] for x in pieces)
    columns = N_KEYS * lags
    reduced_columns = len(keys) * lags
    if len(keys) == 0:
        raise LapMusicError("every training piece is silent (no note anywhere): nothing to learn")
    largest = min(rows, reduced_columns)
    if p > largest:
        raise SolverError(
            f"p={p} hidden units is more than the rank of the data matrix can be: Xi has {rows} rows and "
            f"{reduced_columns} non-trivial columns ({len(keys)} keys used x {lags} lags), so p <= {largest}; "
            f"choose fewer hidden units or use more pieces"
        )
    total_energy = xi_energy(pieces, lags, decay)

    if solver == "exact":
        budget = default_memory_budget() if memory_budget_bytes is None else int(memory_budget_bytes)
        need = exact_memory_bytes(rows, reduced_columns)
        if need > budget:
            raise SolverError(
                f"the exact solver would need about {_gib(need)} (Xi is {rows} x {reduced_columns} float64 = "
                f"{_gib(8 * rows * reduced_columns)}, plus its SVD), over the memory budget of {_gib(budget)}; "
                f"use the approx solver (--solver approx), fewer pieces (--max-sequences) or a shorter --max-lag"
            )
        U, singular_values = _exact_svd(pieces, keys, lags, report, decay)
        device_name, dtype_name, used_iterations = "cpu", "float64", 0
    else:
        U, singular_values, device_name, dtype_name, used_iterations = approx_svd(
            pieces, keys, lags, p, device=device, seed=seed, report=report,
            memory_budget_bytes=memory_budget_bytes, dtype=dtype,
            iterations=iterations, oversample=oversample, cancel=cancel, decay=decay,
        )
    rank = _numerical_rank(singular_values, float(np.sqrt(total_energy)),
                           1e-10 if solver == "exact" or dtype_name == "float64" else 1e-5)
    if p > rank and rank < singular_values.size:
        raise SolverError(
            f"p={p} hidden units is more than the rank {rank} of the data matrix Xi ({rows} x {columns}): "
            f"the extra units would carry nothing; choose p <= {rank} or use more pieces"
        )
    A, B = _factors(U[:, :p], keys, lags)
    B = decay * B  # row t of Xi_gamma = [x_t, 0..] + gamma * (row t-1 shifted one block): see docs/lae.md
    keep = singular_values if solver == "exact" else singular_values[:p]
    report(1.0, f"LAE fitted: p={p}, {rows} rows x {columns} columns")
    return LinearAutoencoder(
        A=A, B=B, singular_values=np.asarray(keep, dtype=np.float64), total_energy=total_energy,
        p=p, max_lag=lags, solver=solver, seconds=time.perf_counter() - started,
        rows=rows, columns=columns, device=device_name, dtype=dtype_name,
        iterations=used_iterations, seed=int(seed), decay=decay,
    )


def _numerical_rank(singular_values: np.ndarray, frobenius: float, relative: float) -> int:
    """Singular values above ``relative * ||Xi||_F`` (a scale-aware tolerance)."""
    return int(np.count_nonzero(singular_values > relative * max(frobenius, 1e-300)))


def _factors(U_p: np.ndarray, keys: np.ndarray, lags: int) -> tuple[np.ndarray, np.ndarray]:
    """``A = U^(0)^T`` ``(p, 88)`` and ``B = sum_i U^(i+1)^T U^(i)`` ``(p, p)`` from ``U_p`` ``(len(keys) * L, p)``."""
    p = U_p.shape[1]
    width = len(keys)
    blocks = U_p.reshape(lags, width, p)
    A = np.zeros((p, N_KEYS))
    A[:, keys] = blocks[0].T
    if lags > 1:
        B = blocks[1:].reshape(-1, p).T @ blocks[:-1].reshape(-1, p)
    else:
        B = np.zeros((p, p))
    return A, B


def _exact_svd(pieces, keys, lags, report, decay: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    import scipy.linalg

    rows = sum(x.shape[0] for x in pieces)
    report(0.02, f"building Xi ({rows} x {len(keys) * lags}, float64)")
    xi = build_xi(pieces, lags, keys=keys, decay=decay)
    report(0.1, f"dense SVD of Xi ({xi.shape[0]} x {xi.shape[1]})")
    try:
        _, singular_values, Vt = scipy.linalg.svd(xi, full_matrices=False, overwrite_a=True,
                                                  check_finite=False, lapack_driver="gesdd")
    except np.linalg.LinAlgError:
        # gesdd occasionally fails to converge; gesvd is slower but more robust.
        xi = build_xi(pieces, lags, keys=keys, decay=decay)
        _, singular_values, Vt = scipy.linalg.svd(xi, full_matrices=False, overwrite_a=True,
                                                  check_finite=False, lapack_driver="gesvd")
    del xi
    return fix_signs(Vt.T), singular_values
