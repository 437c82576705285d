"""The Gram LAE solver: the right singular vectors of ``Xi`` from the eigenvectors of ``G = Xi^T Xi``.

With a lag weighting ``gamma < 1`` (or a small ``max_lag``) ``Xi`` is tall and thin: ``N`` rows (every frame)
but only ``K L`` columns (``K`` keys in use, ``L`` lags; 57 x 23 = 1,311 on Nottingham at ``gamma = 0.3``). Its
right singular vectors are the eigenvectors of ``G`` and its singular values the square roots of ``G``'s
eigenvalues. :func:`xi_gram` builds ``G`` without ``Xi``, from lagged products of the pieces (``L N K^2``
multiply-adds), and :func:`gram_svd` takes its dense symmetric eigendecomposition in float64.

Block ``(a, b)`` of ``G`` (``K x K``, lag ``a`` rows, lag ``b`` columns, ``a <= b``, ``d = b - a``) sums,
over every piece ``x_0 .. x_{T-1}`` (``x_t = 0`` for ``t < 0``)::

    G[a, b] = gamma^(a+b) sum_{t=b}^{T-1} x_{t-a} x_{t-b}^T = gamma^(a+b) (F_d - tail_{d,a})
    F_d = sum_u x_{u+d} x_u^T                      (the piece's full lag-d product)
    tail_{d,a} = sum_{j=1}^{a} x_{T-j} x_{T-j-d}^T  (what F_d has beyond the last row, t = T-1)

and ``G[b, a] = G[a, b]^T``. ``F_d`` summed over the pieces is one product of the pieces laid end to end with
``L`` silent frames between them (so no lag-``d`` pair spans two pieces); the tails need each piece's last
``L - 1`` frames. Both are sums of 0/1 products: integers at most ``N``, so float32 products are exact below
``2^24`` frames (float64 above).

Accuracy: squaring ``Xi`` squares its condition number. The eigenvalues come with an absolute error of a few
``eps ||G||_2 = eps sigma_1^2`` (``eps`` = 2.2e-16), so a singular value ``sigma_i`` is guaranteed only to about
``eps sigma_1^2 / (2 sigma_i)``: nothing is resolved below about ``1e-8 sigma_1`` (hence :data:`RANK_TOLERANCE`).
Measured against the dense SVD (docs/lae.md) the errors stay far below that bound: at ``gamma = 0.3`` the top
256 singular values of 100 Nottingham pieces agree to 2e-12 relative and ``B`` to 1e-10; at ``p = 512``
(``sigma_p`` ~5e-7 ``sigma_1``) to 1e-5 and 6e-3.
"""

from __future__ import annotations

import numpy as np

from lapmusic.core.errors import LapMusicError
from lapmusic.lae.xi import fix_signs, lag_weights

GRAM_MAX_COLUMNS = 4096  # "auto" takes the Gram solver up to here (G: 128 MiB; eigh: ~15 CPU s, 0.6 GB peak)
FLOAT32_COUNTS = 2**24  # float32 holds every integer below this exactly: the lagged products' counts, up to N
RANK_TOLERANCE = 1e-7  # singular values below this fraction of ||Xi||_F are rounding noise of the eigensolver


def xi_gram(pieces, keys, lags: int, decay: float = 1.0) -> np.ndarray:
    """The Gram matrix ``Xi_gamma^T Xi_gamma`` of the weighted data matrix, without building ``Xi``.

    Parameters
    ----------
    pieces : sequence of ndarray of shape (T_i, 88)
        The validated 0/1 pieces (:func:`lapmusic.lae.xi.validate_sequences`).
    keys : ndarray of int, shape (K,)
        The key columns kept in every lag block.
    lags : int
        ``L``, the number of lag blocks.
    decay : float, default=1.0
        ``gamma``: lag block ``k`` weighted by ``gamma**k``.

    Returns
    -------
    ndarray of shape (K L, K L)
        float64, symmetric; equal to ``build_xi(pieces, lags, keys=keys, decay=decay)`` transposed times
        itself, block ``(a, b)`` the sum of ``gamma^(a+b) x_{t-a} x_{t-b}^T`` over every row ``t``
        (module docstring).
    """
    keys = np.asarray(keys)
    width = len(keys)
    gap = lags  # silent frames between two pieces: no lag-d pair (d < L) spans two pieces
    total = sum(x.shape[0] for x in pieces) + gap * len(pieces)
    counts = np.float32 if total < FLOAT32_COUNTS else np.float64
    laid = np.zeros((total, width), dtype=counts)
    ends = np.zeros((max(lags - 1, 0), len(pieces), width), dtype=counts)  # ends[j-1, i] = x_{T-j} of piece i
    row = 0
    for i, x in enumerate(pieces):
        frames = x[:, keys]
        T = frames.shape[0]
        laid[row: row + T] = frames
        row += T + gap
        last = min(T, lags - 1)
        ends[:last, i] = frames[T - last:][::-1]
    weights = lag_weights(lags, decay)
    gram = np.empty((width * lags, width * lags), dtype=np.float64)
    for d in range(lags):
        full = (laid[d:].T @ laid[: total - d]).astype(np.float64)  # F_d = sum_u x_{u+d} x_u^T, exact integers
        # tail_{d,a} for a = 1 .. L-1-d: cumulative sums over j of sum_i x_{T-j} x_{T-j-d}^T
        count = lags - 1 - d
        tails = np.cumsum(np.matmul(ends[:count].transpose(0, 2, 1), ends[d: d + count]), axis=0, dtype=np.float64)
        for a in range(lags - d):
            b = a + d
            block = full - tails[a - 1] if a else full
            block = (weights[a] * weights[b]) * block
            gram[a * width:(a + 1) * width, b * width:(b + 1) * width] = block
            if d:
                gram[b * width:(b + 1) * width, a * width:(a + 1) * width] = block.T
    return gram


def gram_svd(pieces, keys, lags: int, decay: float, report, cancel=None) -> tuple[np.ndarray, np.ndarray]:
    """Right singular vectors and singular values of ``Xi_gamma`` from the eigendecomposition of its Gram matrix.

    Parameters
    ----------
    pieces : sequence of ndarray of shape (T_i, 88)
        The validated 0/1 pieces.
    keys : ndarray of int, shape (K,)
        The keys in use.
    lags : int
        ``L``, the number of lag blocks.
    decay : float
        ``gamma`` in ``(0, 1]``.
    report : callable
        ``report(fraction, message)`` progress callback.
    cancel : object with ``is_set()``, optional
        Checked between building ``G`` and its eigendecomposition.

    Returns
    -------
    U : ndarray of shape (K L, min(N, K L))
        float64, orthonormal columns, in the order of ``S``; signs fixed by :func:`lapmusic.lae.xi.fix_signs`.
    S : ndarray of shape (min(N, K L),)
        The singular values, descending: ``sqrt`` of ``G``'s eigenvalues (rounding's small negative ones read
        as 0); those below about ``1e-8 sigma_1`` are rounding noise (module docstring).

    Raises
    ------
    LapMusicError
        ``cancel`` was set.
    """
    import scipy.linalg

    rows = sum(x.shape[0] for x in pieces)
    columns = len(keys) * lags
    report(0.05, f"building the Gram matrix of Xi ({columns} x {columns}, float64) from {lags} lagged products")
    gram = xi_gram(pieces, keys, lags, decay)
    if cancel is not None and cancel.is_set():
        raise LapMusicError("LAE fit cancelled")
    report(0.5, f"eigendecomposition of the {columns} x {columns} Gram matrix")
    values, vectors = scipy.linalg.eigh(gram, overwrite_a=True, check_finite=False, driver="evd")
    keep = min(rows, columns)
    values, vectors = values[::-1][:keep], vectors[:, ::-1][:, :keep]
    return fix_signs(vectors), np.sqrt(np.clip(values, 0.0, None))
