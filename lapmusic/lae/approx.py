"""The approximate LAE solver: a randomized block Krylov SVD of ``Xi`` that never builds ``Xi``.

:func:`approx_svd`, which :func:`lapmusic.lae.fit.fit_lae` calls, builds a Krylov space from products with
``Xi`` and ``Xi^T`` (:class:`lapmusic.lae.xi_operator.XiOperator`: FFT convolutions, torch, CUDA when
available, float32 by default). docs/lae.md describes the method and its accuracy.
"""

from __future__ import annotations

import math

import numpy as np

from lapmusic import N_KEYS
from lapmusic.core.device import resolve_device
from lapmusic.core.errors import LapMusicError, SolverError
from lapmusic.lae.xi import fix_signs, lag_weights
from lapmusic.lae.xi_operator import DEFAULT_CHUNK_BYTES, WeightedXi, XiOperator

KRYLOV_TARGET_WIDTH = 1024  # default q: about this many Krylov columns, with 4 <= q <= 8


def _resolve_dtype(dtype):
    """The torch float dtype for ``dtype`` (None: float32); SolverError for anything but float32/64."""
    import torch

    if dtype is None:
        return torch.float32
    lookup = {"float32": torch.float32, "float64": torch.float64}
    if isinstance(dtype, str):
        if dtype not in lookup:
            raise SolverError(f"dtype must be float32 or float64, got {dtype!r}")
        return lookup[dtype]
    if dtype in (torch.float32, np.float32):
        return torch.float32
    if dtype in (torch.float64, np.float64):
        return torch.float64
    try:
        return lookup[np.dtype(dtype).name]
    except (TypeError, KeyError):
        raise SolverError(f"dtype must be float32 or float64, got {dtype!r}") from None


def _default_iterations(block: int) -> int:
    """Block Krylov iterations ``q`` for a block of ``block`` columns: ``(q+1) * block ~ 1024``, 4..8."""
    return int(min(8, max(4, math.ceil(KRYLOV_TARGET_WIDTH / max(block, 1)) - 1)))


def approx_svd(pieces, keys, lags, p, *, device, seed, report, memory_budget_bytes, dtype,
                iterations, oversample, cancel, decay: float = 1.0):
    """Top ``p`` right singular vectors and singular values of ``Xi`` by a randomized block Krylov SVD.

    Block Lanczos with full reorthogonalisation (Musco & Musco 2015) through :class:`XiOperator`: the
    Krylov space ``[Xi Omega, (Xi Xi^T) Xi Omega, ..., (Xi Xi^T)^q Xi Omega]`` (``(q+1) r`` columns,
    ``r = p + oversample``, ``Omega`` Gaussian) is built block by block; with ``Q`` its orthonormal
    basis and ``P = Xi^T Q`` (kept from the iterations: no extra product), ``Xi ~ Q P^T``, so the top
    singular triplets of ``P`` give those of ``Xi`` (Rayleigh-Ritz).

    Parameters
    ----------
    pieces : sequence of ndarray of shape (T_i, 88)
        The validated 0/1 training pieces.
    keys : ndarray of int, shape (K,)
        The keys in use (the columns of ``Xi`` kept).
    lags : int
        ``L``, the number of lag blocks.
    p : int
        Number of singular triplets wanted, ``p <= min(N, K L)``.
    device : str or torch.device
        As for :func:`lapmusic.core.device.resolve_device`.
    seed : int
        Seed of ``Omega`` (drawn on the CPU, so every device starts from the same block).
    report : callable
        ``report(fraction, message)`` progress callback.
    memory_budget_bytes : int or None
        The FFT chunks get a quarter of it, at least 16 MiB (None: ``DEFAULT_CHUNK_BYTES``).
    dtype : None, str or dtype
        float32 (None) or float64.
    iterations : int or None
        ``q`` (None: 4 to 8, about ``KRYLOV_TARGET_WIDTH / r``); capped where the space would exceed
        ``min(N, K L)`` columns.
    oversample : int or None
        ``r - p`` (None: ``max(10, p // 10)``).
    cancel : object with ``is_set()`` or None
        Checked after every product.
    decay : float, default=1.0
        ``gamma``: the SVD is that of ``Xi D``, lag block ``k`` weighted by ``gamma**k``.

    Returns
    -------
    U : ndarray of shape (K L, p)
        float64, orthonormal columns (re-orthonormalised in float64), signs fixed by
        :func:`lapmusic.lae.xi.fix_signs`.
    S : ndarray of shape (p,)
        The top singular values, descending.
    device : str
        The device used, e.g. ``"cpu"``.
    dtype : str
        ``"float32"`` or ``"float64"``.
    q : int
        The Krylov iterations done.

    Raises
    ------
    SolverError
        A bad ``dtype`` or a negative ``iterations``.
    DeviceError
        ``device`` is not available.
    LapMusicError
        ``cancel`` was set.
    """
    import torch

    torch_device = resolve_device(device)
    torch_dtype = _resolve_dtype(dtype)
    rows = sum(x.shape[0] for x in pieces)
    width = len(keys) * lags
    smallest = min(rows, width)
    extra = max(10, p // 10) if oversample is None else max(0, int(oversample))
    r = min(p + extra, smallest)
    # Narrow blocks (small p) get more iterations: they are cheap and the space stays ~1000 wide.
    q = _default_iterations(r) if iterations is None else int(iterations)
    if q < 0:
        raise SolverError(f"the number of Krylov iterations must be >= 0, got {iterations}")
    q = min(q, smallest // r - 1)  # the Krylov space cannot exceed the matrix's smaller side
    m = (q + 1) * r
    chunk = DEFAULT_CHUNK_BYTES if memory_budget_bytes is None else max(16 * 2**20, int(memory_budget_bytes) // 4)
    # Xi's columns counted as fit_lae's summary counts them (88 per lag), the non-zero ones beside.
    report(0.01, f"preparing FFTs of {len(pieces)} pieces (Xi: {rows} rows x {N_KEYS * lags} columns, "
                 f"{width} of them with notes)")
    op = XiOperator(pieces, keys, lags, device=torch_device, dtype=torch_dtype, columns=r, chunk_bytes=chunk)
    if decay != 1.0:
        op = WeightedXi(op, lag_weights(lags, decay), len(keys))

    total_products = 2 * q + 2
    done = [0]

    def step(message: str):
        done[0] += 1
        report(0.03 + 0.9 * done[0] / total_products, f"{message} ({done[0]}/{total_products} products)")
        if cancel is not None and cancel.is_set():
            raise LapMusicError("LAE fit cancelled")

    def orthonormal(M):
        return torch.linalg.qr(M, mode="reduced")[0]

    tiny = float(torch.finfo(torch_dtype).eps) ** 0.5

    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    omega = torch.randn((width, r), generator=generator, dtype=torch_dtype).to(torch_device)
    with torch.no_grad():
        basis = torch.empty((rows, m), device=torch_device, dtype=torch_dtype)  # Q
        images = torch.empty((width, m), device=torch_device, dtype=torch_dtype)  # P = Xi^T Q
        basis[:, :r] = orthonormal(op.matmul(omega))
        del omega
        step("Krylov block 1: Xi Omega")
        for j in range(q + 1):
            block = slice(j * r, (j + 1) * r)
            images[:, block] = op.rmatmul(basis[:, block])
            step(f"Krylov block {j + 1}: Xi^T Q")
            if j == q:
                break
            W = op.matmul(images[:, block])
            previous = basis[:, : (j + 1) * r]
            scale = torch.linalg.vector_norm(W, dim=0).max()
            # Block Lanczos: W is orthogonal to all but the last two blocks save rounding; a full pass removes it.
            recent = basis[:, max(0, j - 1) * r: (j + 1) * r]
            W -= recent @ (recent.T @ W)
            W -= previous @ (previous.T @ W)
            W, R = torch.linalg.qr(W, mode="reduced")
            if R.diagonal().abs().min() <= tiny * scale:
                # The Krylov space is (nearly) exhausted: part of W was rounding noise, so orthogonalise once more.
                W -= previous @ (previous.T @ W)
                W = orthonormal(W)
            basis[:, (j + 1) * r:(j + 2) * r] = W
            del W, R
            step(f"Krylov block {j + 2}: Xi P")
        del basis
        # Rayleigh-Ritz: Xi ~ Q P^T, so the SVD of P gives Xi's top singular values and right vectors.
        report(0.95, f"Rayleigh-Ritz on the {m}-dimensional Krylov space")
        if torch_dtype == torch.float64:
            # Most accurate (for p up to the rank): P = Q_P R, then the small SVD of R.
            basis_p, triangle = torch.linalg.qr(images, mode="reduced")
            small_u, S, _ = torch.linalg.svd(triangle)
            U = basis_p @ small_u[:, :p]
        else:
            # P^T P is block tridiagonal (Xi Xi^T Q_j lies in span(Q_0..Q_{j+1})): only those blocks are computed.
            gram = torch.zeros((m, m), device=torch_device, dtype=torch.float64)
            for j in range(q + 1):
                here = slice(j * r, (j + 1) * r)
                gram[here, here] = (images[:, here].T @ images[:, here]).to(torch.float64)
                if j:
                    before = slice((j - 1) * r, j * r)
                    coupling = (images[:, here].T @ images[:, before]).to(torch.float64)
                    gram[here, before] = coupling
                    gram[before, here] = coupling.T
            # Only the top p eigenpairs are needed, and LAPACK's MRRR driver computes just those.
            import scipy.linalg

            values, vectors = scipy.linalg.eigh(gram.cpu().numpy(), subset_by_index=[m - p, m - 1],
                                                driver="evr")
            values, vectors = np.clip(values[::-1], 0, None), vectors[:, ::-1]
            S = torch.from_numpy(np.sqrt(values).copy())
            top = vectors / np.where(values > 0, np.sqrt(values), 1.0)
            U = images @ torch.from_numpy(top.copy()).to(device=torch_device, dtype=torch_dtype)
    U = U.to(device="cpu", dtype=torch.float64).numpy()
    S = S.to(device="cpu", dtype=torch.float64).numpy()
    # Loewdin re-orthonormalisation in float64 (moves each column least): ||B||_2 <= 1 needs orthonormal columns.
    values, vectors = np.linalg.eigh(U.T @ U)
    if values.min() > 1e-6:
        U = U @ (vectors @ np.diag(values**-0.5) @ vectors.T)
    else:  # some columns are (near) zero: p is above the rank, which fit_lae reports
        U = np.linalg.qr(U)[0]
    return fix_signs(U), S, str(torch_device), "float32" if torch_dtype == torch.float32 else "float64", q
