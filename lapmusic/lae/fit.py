"""Fitting the linear autoencoder for sequences (Pasa & Sperduti, NIPS 2014, section 3): :func:`fit_lae`.

State recursion, ``y_0 = 0``::

    y_t = A x_t + B y_{t-1}          x_t in R^88 (a piano-roll frame), y_t in R^p

Decoding runs it backwards: ``x_t ~ A^T y_t`` and ``y_{t-1} ~ B^T y_t``, so the final state of a
piece unrolls into the whole piece, last frame first.

The optimal ``A`` and ``B`` come from the data matrix ``Xi`` ``(N, 88 L)``: one row per time step
``t`` of every training piece, holding the reversed prefix ``xi_t = [x_t, x_{t-1}, ..., x_1]`` followed
by zeros, cut after ``L`` frames (``L`` = the longest piece, or ``max_lag``). As column vectors,
``xi_t = P x_t + R xi_{t-1}``, where ``P`` ``(88 L, 88)`` puts a frame in the first block and ``R``
``(88 L, 88 L)`` shifts a prefix down by one block (dropping the last). With the thin SVD
``Xi = V Lambda U^T`` and ``U_p`` ``(88 L, p)`` its first ``p`` right singular vectors, split into ``L``
blocks ``U^(0), U^(1), ...`` of 88 rows, ``y_t = U_p^T xi_t`` gives::

    A = U_p^T P = U^(0)^T                         (p, 88)
    B = U_p^T R U_p = sum_i U^(i+1)^T U^(i)       (p, p)

With ``p = rank(Xi)`` the states equal ``Xi U_p`` and decoding is exact.

Lag weighting (``decay = gamma`` in ``(0, 1]``): lag block ``k`` of every row is scaled by ``gamma**k``,
i.e. ``Xi_gamma = Xi D`` with ``D = diag(gamma**k I_88)``, so ``xi_t = P x_t + gamma R xi_{t-1}``; then
``A = U^(0)^T`` and ``B = gamma U_p^T R U_p`` from ``Xi_gamma``'s right singular vectors, and older frames
weigh less in the fit (docs/lae.md, "Lag weighting"). ``gamma = 1`` is the paper's LAE.

Three solvers, and ``auto`` (the default) to choose:

* ``gram`` builds the small ``(K L, K L)`` Gram matrix ``Xi^T Xi`` from lagged products of the pieces (never
  ``Xi``) and takes its eigendecomposition in float64 (:mod:`lapmusic.lae.gram`): for ``Xi`` with few
  non-zero columns, i.e. a lag weighting ``gamma < 1`` or a small ``max_lag``.
* ``exact`` builds ``Xi`` (only the columns of keys that occur: the others are zero) in float64 and takes
  a dense SVD. It refuses, before allocating anything, data whose ``Xi`` and SVD would not fit a memory
  budget.
* ``approx`` is a randomized block Krylov SVD that never builds ``Xi``: a product ``Xi W`` is,
  per piece, a causal convolution of the piece with the lag blocks of ``W``, and ``Xi^T Y`` a
  cross-correlation; :mod:`lapmusic.lae.approx` does both with FFTs (torch, CUDA when available, float32
  by default). docs/lae.md describes the method and its accuracy.
* ``auto`` takes ``gram`` when ``Xi`` has at most :data:`lapmusic.lae.gram.GRAM_MAX_COLUMNS` non-zero columns,
  else ``approx``.
"""

from __future__ import annotations

import math
import os
import time
from typing import Sequence

import numpy as np

from lapmusic import N_KEYS
from lapmusic.core.device import resolve_device
from lapmusic.core.errors import LapMusicError, SolverError
from lapmusic.core.progress import Progress
from lapmusic.data.fingerprint import pieces_fingerprint
from lapmusic.lae.approx import approx_svd
from lapmusic.lae.autoencoder import LinearAutoencoder
from lapmusic.lae.gram import GRAM_MAX_COLUMNS, RANK_TOLERANCE, gram_svd
from lapmusic.lae.xi import active_keys, build_xi, fix_signs, resolve_max_lag, validate_sequences, xi_energy

SOLVERS = ("auto", "gram", "exact", "approx")


def _exact_memory_bytes(rows: int, columns: int) -> int:
    """Bytes the exact solver needs: ``Xi`` in float64 plus its thin SVD (U, Vt and LAPACK workspace)."""
    k = min(rows, columns)
    return 8 * (rows * columns + rows * k + k * columns + 4 * k * k + 8 * max(rows, columns))


def _default_memory_budget() -> int:
    """Half of the machine's physical memory (the exact solver's default budget)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2)
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 4 * 2**30


def choose_solver(solver: str, reduced_columns: int) -> str:
    """The solver ``fit_lae`` runs: ``solver`` itself, or for ``"auto"`` ``"gram"`` when ``Xi`` has at most
    ``GRAM_MAX_COLUMNS`` non-zero columns and ``"approx"`` above (at the bound, 4,096, the Gram matrix takes
    128 MiB and its eigendecomposition about 15 CPU seconds and 0.6 GB: docs/lae.md).

    Parameters
    ----------
    solver : {"auto", "gram", "exact", "approx"}
        The solver asked for.
    reduced_columns : int
        ``K L``: keys in use times lags.

    Returns
    -------
    str
        ``"gram"``, ``"exact"`` or ``"approx"``.

    Raises
    ------
    SolverError
        ``solver`` is none of the four.
    """
    if solver not in SOLVERS:
        raise SolverError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    if solver != "auto":
        return solver
    return "gram" if reduced_columns <= GRAM_MAX_COLUMNS else "approx"


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**28 else f"{nbytes / 2**20:.0f} MiB"


# ------------------------------------------------------------------------------------------ fitting
def weighted_max_lag(decay: float | None, max_lag: int | None = None) -> int | None:
    """The lags a lag-weighted LAE keeps: ``max_lag`` when given, else (with ``decay < 1``) the first ``k`` with
    ``decay**k < 1e-12``; ``None`` (every lag) for the unweighted LAE.

    The weighted ``Xi``'s columns beyond that lag are below 1e-12 of the first block, so cutting them leaves
    the LAE unchanged to rounding while Piano-midi.de's 4 000-frame pieces no longer cost 4 000 lag blocks.

    Parameters
    ----------
    decay : float or None
        The lag weighting ``gamma`` (``None`` or 1: unweighted).
    max_lag : int, optional
        An explicit cut, which wins.

    Returns
    -------
    int or None
        The max lag to pass to :func:`fit_lae`.
    """
    if max_lag is not None or decay is None or decay >= 1:
        return max_lag
    return max(1, math.ceil(math.log(1e-12) / math.log(decay)))


def fit_lae(
    seqs: Sequence[np.ndarray],
    p: int,
    *,
    solver: str = "auto",
    max_lag: int | None = None,
    decay: float | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: Progress | None = None,
    memory_budget_bytes: int | None = None,
    dtype=None,
    iterations: int | None = None,
    oversample: int | None = None,
    cancel=None,
) -> LinearAutoencoder:
    """Fit the linear autoencoder with ``p`` hidden units on binary piano rolls.

    Builds (``exact``), only multiplies by (``approx``) or takes the Gram matrix of (``gram``) the data matrix
    ``Xi`` of the pieces' reversed prefixes, takes its top ``p`` right singular vectors ``U_p`` and returns
    ``A = U_p^T P`` ``(p, 88)`` and ``B = gamma U_p^T R U_p`` ``(p, p)`` (module docstring).

    Parameters
    ----------
    seqs : sequence of ndarray of shape (T_i, 88)
        The training pieces, 0/1 values, each with ``T_i >= 2`` frames; column ``k`` is MIDI pitch
        ``21 + k``.
    p : int
        Number of hidden units (the state size), ``1 <= p <= rank(Xi)``.
    solver : {"auto", "gram", "exact", "approx"}, default="auto"
        ``"gram"``: float64 eigendecomposition of ``Xi^T Xi`` (``K L`` square), built from lagged products of
        the pieces on the CPU. ``"approx"``: randomized block Krylov SVD through FFT products, never builds
        ``Xi`` (torch on ``device``). ``"exact"``: dense float64 SVD of ``Xi`` on the CPU. ``"auto"``:
        ``gram`` when ``K L <= GRAM_MAX_COLUMNS`` (4,096), else ``approx`` (:func:`choose_solver`).
    max_lag : int, optional
        ``L``, the number of frames kept of every reversed prefix (the lag blocks of ``Xi``). Default:
        the longest piece; larger values are clamped to it.
    decay : float, optional
        ``gamma`` in ``(0, 1]``: lag ``k`` of every row of ``Xi`` is weighted by ``gamma**k``. Default 1
        (the paper's unweighted LAE).
    device : str, default="auto"
        Torch device of the approx solver: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``
        (checked for ``solver="auto"`` too). The exact and gram solvers always run on the CPU.
    seed : int, default=0
        Seed of the approx solver's random start block; the same seed gives the same factors.
    progress : callable, optional
        ``progress(fraction, message)``, called as the work advances, last with fraction 1.0.
    memory_budget_bytes : int, optional
        ``exact``: refuse data whose ``Xi`` and SVD would need more (default: half the physical memory).
        ``approx``: its FFT work chunks get a quarter of it, at least 16 MiB (default: 512 MiB chunks).
    dtype : {None, "float32", "float64"} or numpy/torch float dtype, optional
        Precision of the approx solver (default float32); ``exact`` always computes in float64.
    iterations : int, optional
        Krylov iterations ``q`` of the approx solver (default: 4 to 8, more for small ``p``).
    oversample : int, optional
        Extra columns of the approx solver's block beyond ``p`` (default ``max(10, p // 10)``).
    cancel : object with ``is_set()``, optional
        E.g. a ``threading.Event``; when set, the approx solver stops between two products, the gram solver
        before its eigendecomposition.

    Returns
    -------
    LinearAutoencoder
        ``A`` ``(p, 88)`` and ``B`` ``(p, p)`` in float64, the singular values of ``Xi`` (all of them for
        ``exact`` and ``gram``, the top ``p`` for ``approx``), ``||Xi||_F^2`` and the settings used
        (``solver`` names the one that ran: ``"auto"`` never appears).

    Raises
    ------
    LapMusicError
        A piece is not a ``(T, 88)`` 0/1 array, has fewer than 2 frames, every piece is silent, or
        ``cancel`` was set (approx and gram).
    SolverError
        An impossible setting: an unknown solver, ``p`` not a positive integer or above the rank of
        ``Xi`` (the message gives the largest usable ``p``), ``decay`` outside ``(0, 1]``, a bad
        ``max_lag`` or ``dtype``, or (``exact``) data over the memory budget.
    DeviceError
        ``device`` names a device that this machine lacks.

    Examples
    --------
    >>> import numpy as np
    >>> from lapmusic.lae.fit import fit_lae
    >>> rng = np.random.default_rng(0)
    >>> pieces = [(rng.random((16, 88)) < 0.05).astype(np.uint8) for _ in range(4)]
    >>> lae = fit_lae(pieces, 8, solver="exact")
    >>> lae.A.shape, lae.B.shape
    ((8, 88), (8, 8))
    """
    started = time.perf_counter()
    report = progress or (lambda fraction, message: None)
    if solver not in SOLVERS:
        raise SolverError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    if solver == "auto":
        resolve_device(device)  # a missing device is an error whichever solver "auto" picks
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
    solver = choose_solver(solver, reduced_columns)

    if solver == "gram":
        U, singular_values = gram_svd(pieces, keys, lags, decay, report, cancel)
        device_name, dtype_name, used_iterations = "cpu", "float64", 0
    elif solver == "exact":
        budget = _default_memory_budget() if memory_budget_bytes is None else int(memory_budget_bytes)
        need = _exact_memory_bytes(rows, reduced_columns)
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
    tolerance = RANK_TOLERANCE if solver == "gram" else 1e-10 if solver == "exact" or dtype_name == "float64" else 1e-5
    rank = _numerical_rank(singular_values, float(np.sqrt(total_energy)), tolerance)
    if p > rank and rank < singular_values.size:
        raise SolverError(
            f"p={p} hidden units is more than the rank {rank} of the data matrix Xi ({rows} x {columns}): "
            f"the extra units would carry nothing; choose p <= {rank} or use more pieces"
        )
    A, B = _factors(U[:, :p], keys, lags)
    B = decay * B  # row t of Xi_gamma = [x_t, 0..] + gamma * (row t-1 shifted one block): see docs/lae.md
    keep = singular_values[:p] if solver == "approx" else singular_values
    report(1.0, f"LAE fitted: p={p}, Xi: {rows} rows x {columns} columns, {reduced_columns} of them with notes")
    return LinearAutoencoder(
        A=A, B=B, singular_values=np.asarray(keep, dtype=np.float64), total_energy=total_energy,
        p=p, max_lag=lags, solver=solver, seconds=time.perf_counter() - started,
        rows=rows, columns=columns, device=device_name, dtype=dtype_name,
        iterations=used_iterations, seed=int(seed), decay=decay, data_sha256=pieces_fingerprint(pieces)["sha256"],
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
    """Right singular vectors ``(len(keys) * L, k)`` and singular values ``(k,)`` of the dense ``Xi``."""
    import scipy.linalg

    rows = sum(x.shape[0] for x in pieces)
    report(0.02, f"building Xi ({rows} rows x {N_KEYS * lags} columns, {len(keys) * lags} of them with notes, "
                 "float64)")
    xi = build_xi(pieces, lags, keys=keys, decay=decay)
    report(0.1, f"dense SVD of Xi ({rows} rows x {N_KEYS * lags} columns, {xi.shape[1]} of them with notes)")
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
