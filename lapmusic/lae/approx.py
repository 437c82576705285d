"""The approximate LAE solver: a randomized block Krylov SVD of ``Xi`` that never builds ``Xi``.

A product ``Xi W`` is, per piece, a causal convolution of the piece with the lag blocks of ``W``, and
``Xi^T Y`` a cross-correlation; :class:`XiOperator` does both with FFTs on pieces bucketed by length (torch,
CUDA when available, float32 by default). Split out of ``lae.py`` (which calls :func:`approx_svd` from
``fit_lae`` and re-exports these names); docs/lae.md has the method and the benchmark.
"""

from __future__ import annotations

import math

import numpy as np

from lapmusic.core.device import resolve_device
from lapmusic.core.errors import LapMusicError, SolverError

KRYLOV_TARGET_WIDTH = 1024  # default q: about this many Krylov columns, with 4 <= q <= 8
DEFAULT_CHUNK_BYTES = 512 * 2**20  # working memory per FFT chunk in the approx solver


def resolve_dtype(dtype):
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


SEGMENT_CHOICES = (8, 16, 32, 64, 128, 256, 512, 1024)


def multiply_adds(lengths, lags: int, segment: int) -> int:
    """Frequency rows the partitioned convolution multiplies for these piece lengths and segment size.

    Segment ``i`` of a piece meets the lag partitions ``0..min(i, J-1)`` (``J = ceil(L / S)``), each
    pair costing ``S + 1`` frequencies of a ``(K) x (K, r)`` complex product.
    """
    counts = -(-np.asarray(lengths) // segment)
    partitions = -(-lags // segment)
    pairs = sum(int(np.minimum(np.arange(1, n + 1), partitions).sum()) for n in counts)
    return pairs * (segment + 1)


def choose_segment(lengths, lags: int) -> int:
    """The segment size ``S`` (a power of two) that minimises :func:`multiply_adds`.

    Short segments waste little padding but pair every segment with many lag partitions; long ones
    the reverse. Ties go to the shorter segment (less memory).
    """
    return min(SEGMENT_CHOICES, key=lambda S: (multiply_adds(lengths, lags, S), S))


class XiOperator:
    """Products with ``Xi`` and ``Xi^T`` without building it (torch; CPU or CUDA).

    A matrix ``W`` ``(K * L, r)`` whose rows index ``Xi``'s columns is handled as lag blocks
    ``(L, K, r)``. A piece ``x`` (``(T, K)``, only the keys in use) contributes the rows
    ``sum_k x_{t-k} W[k]`` to ``Xi W``: a causal convolution, and ``Xi^T Y`` collects the
    cross-correlations ``sum_t x_{t-k}^T Y_t``.

    Both use a uniformly partitioned overlap-save convolution (as for long audio reverbs): time is cut
    into segments of ``S`` frames and the lags into ``J = ceil(L / S)`` partitions of ``S``; every
    FFT has length ``2 S``. Output segment ``i`` is ``sum_j X_hat[i - j] W_hat[j]`` in the frequency
    domain, so for each partition ``j`` one batched complex matrix product covers every segment of
    every piece at once: large, efficient products, and one short FFT of ``W`` per partition, whatever
    the spread of piece lengths.
    """

    def __init__(self, pieces, keys, lags, *, device, dtype, columns: int,
                 chunk_bytes: int = 512 * 2**20, segment: int | None = None):
        import torch

        self.torch = torch
        self.device = device
        self.dtype = dtype
        self.lags = lags
        self.keys = np.asarray(keys)
        self.width = len(keys)
        lengths = np.array([x.shape[0] for x in pieces])
        self.rows = int(lengths.sum())
        S = int(segment) if segment else choose_segment(lengths, lags)
        self.segment = S
        self.partitions = -(-lags // S)
        self.freqs = S + 1
        counts = -(-lengths // S)  # segments per piece
        self.segments = int(counts.sum())
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])  # index of each piece's first segment
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])  # its first row in Xi

        # Overlap-save input blocks: block m of a piece = frames [(m-1)S, (m+1)S), zeros before t=0.
        blocks = np.zeros((self.segments, 2 * S, self.width), dtype=np.float32)
        positions, rows = [], []
        for i, x in enumerate(pieces):
            n = int(counts[i])
            padded = np.zeros(((n + 1) * S, self.width), dtype=np.float32)
            padded[S:S + x.shape[0]] = x[:, self.keys]
            padded = padded.reshape(n + 1, S, self.width)
            blocks[first[i]:first[i] + n] = np.concatenate([padded[:-1], padded[1:]], axis=1)
            t = np.arange(x.shape[0])
            positions.append((t % S) * self.segments + first[i] + t // S)  # flat index into (S, segments)
            rows.append(offsets[i] + t)
        spectra = torch.fft.rfft(torch.from_numpy(blocks).to(device=device, dtype=dtype), dim=1)
        self.spectra = spectra.permute(1, 0, 2).contiguous()  # (F, segments, K)
        # Conjugate transpose, materialised: batched complex products on conjugate views are slow.
        self.spectra_h = spectra.permute(1, 2, 0).conj().resolve_conj().contiguous()  # (F, K, segments)
        del blocks, spectra
        self.positions = torch.from_numpy(np.concatenate(positions)).to(device)
        self.row_index = torch.from_numpy(np.concatenate(rows)).to(device)
        # Segment pairs (target i, source i - j) for partitions j >= 1, within each piece.
        self.pairs = []
        for j in range(1, self.partitions):
            targets = np.concatenate([first[i] + np.arange(j, counts[i]) for i in range(len(pieces))])
            if targets.size == 0:
                break
            self.pairs.append((torch.from_numpy(targets).to(device), torch.from_numpy(targets - j).to(device)))
        itemsize = 8 if dtype == torch.float32 else 16  # bytes per complex value
        # Columns per pass: the output spectrum and one product (F, segments, rc) stay within budget.
        per_column = 3 * self.freqs * max(self.segments, self.width * self.partitions) * itemsize
        self.columns_per_pass = max(1, min(int(columns), int(chunk_bytes) // per_column))

    def matmul(self, W):
        """``Xi W``: ``W`` ``(L * K, r)`` -> ``(N, r)``."""
        torch = self.torch
        S, J, r = self.segment, self.partitions, W.shape[1]
        blocks = W.reshape(self.lags, self.width, r)
        out = torch.empty((self.rows, r), device=self.device, dtype=self.dtype)
        for c0 in range(0, r, self.columns_per_pass):
            part = blocks[:, :, c0:c0 + self.columns_per_pass]
            rc = part.shape[2]
            kernel = torch.zeros((J * S, self.width, rc), device=self.device, dtype=self.dtype)
            kernel[: self.lags] = part
            # .contiguous(): rfft returns the transformed dim innermost, and batched products on such
            # strides fall back to one slow copy per frequency.
            kernel_hat = torch.fft.rfft(kernel.reshape(J, S, self.width, rc), n=2 * S, dim=1).contiguous()  # (J, F, K, rc)
            del kernel
            output_hat = torch.matmul(self.spectra, kernel_hat[0])  # (F, segments, rc)
            for j, (targets, sources) in enumerate(self.pairs, start=1):
                output_hat.index_add_(1, targets, torch.matmul(self.spectra[:, sources], kernel_hat[j]))
            del kernel_hat
            series = torch.fft.irfft(output_hat, n=2 * S, dim=0)[S:]  # (S, segments, rc): overlap-save keeps the second half
            del output_hat
            out[self.row_index, c0:c0 + rc] = series.reshape(-1, rc)[self.positions]
        return out

    def rmatmul(self, Y):
        """``Xi^T Y``: ``Y`` ``(N, r)`` -> ``(L * K, r)``."""
        torch = self.torch
        S, J, r = self.segment, self.partitions, Y.shape[1]
        out = torch.empty((self.lags, self.width, r), device=self.device, dtype=self.dtype)
        for c0 in range(0, r, self.columns_per_pass):
            part = Y[:, c0:c0 + self.columns_per_pass]
            rc = part.shape[1]
            series = torch.zeros((2 * S * self.segments, rc), device=self.device, dtype=self.dtype)
            # The second half of each length-2S block holds the segment (first half zero).
            series[self.positions + S * self.segments] = part[self.row_index]
            series_hat = torch.fft.rfft(series.reshape(2 * S, self.segments, rc), dim=0).contiguous()  # (F, segments, rc)
            del series
            lagged_hat = torch.empty((J, self.freqs, self.width, rc), device=self.device,
                                     dtype=series_hat.dtype)
            torch.matmul(self.spectra_h, series_hat, out=lagged_hat[0])
            for j, (targets, sources) in enumerate(self.pairs, start=1):
                torch.matmul(self.spectra_h[:, :, sources], series_hat[:, targets], out=lagged_hat[j])
            lagged_hat[len(self.pairs) + 1:] = 0  # partitions no segment pair reaches
            del series_hat
            lagged = torch.fft.irfft(lagged_hat, n=2 * S, dim=1)[:, :S]  # (J, S, K, rc)
            out[:, :, c0:c0 + rc] = lagged.reshape(J * S, self.width, rc)[: self.lags]
        return out.reshape(self.lags * self.width, r)


class _WeightedXi:
    """``Xi D`` for a diagonal ``D`` that weights lag block ``k`` by ``w_k``: ``(Xi D) W = Xi (D W)`` and
    ``(Xi D)^T Y = D (Xi^T Y)``, so the FFT products of :class:`XiOperator` serve unchanged."""

    def __init__(self, op: XiOperator, weights: np.ndarray, width: int):
        import torch

        self.op = op
        self.scale = torch.from_numpy(np.repeat(weights, width)).to(device=op.device, dtype=op.dtype)[:, None]

    def matmul(self, W):
        return self.op.matmul(self.scale * W)

    def rmatmul(self, Y):
        return self.scale * self.op.rmatmul(Y)


def default_iterations(block: int) -> int:
    """Block Krylov iterations ``q`` for a block of ``block`` columns: ``(q+1) * block ~ 1024``, 4..8."""
    return int(min(8, max(4, math.ceil(KRYLOV_TARGET_WIDTH / max(block, 1)) - 1)))


def approx_svd(pieces, keys, lags, p, *, device, seed, report, memory_budget_bytes, dtype,
                iterations, oversample, cancel, decay: float = 1.0):
    """Randomized block Krylov SVD of ``Xi`` through :class:`XiOperator` (block Lanczos, full
    reorthogonalisation; Musco & Musco 2015).

    The Krylov space ``[Xi Omega, (Xi Xi^T) Xi Omega, ..., (Xi Xi^T)^q Xi Omega]`` (``(q+1) r`` columns,
    ``r = p + oversample``) is built block by block; with ``Q`` its orthonormal basis and
    ``P = Xi^T Q`` (kept from the iterations: no extra product), the top singular triplets of ``P``
    give those of ``Xi``. Returns ``U`` ``(K * L, p)`` float64 with orthonormal columns, the top
    singular values, the device, the dtype name and ``q``.
    """
    import torch

    from lapmusic.lae.xi import fix_signs, lag_weights  # at call time: lae.py imports this module

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    rows = sum(x.shape[0] for x in pieces)
    width = len(keys) * lags
    smallest = min(rows, width)
    extra = max(10, p // 10) if oversample is None else max(0, int(oversample))
    r = min(p + extra, smallest)
    # Narrow blocks (small p) get more iterations: they are cheap and the space stays ~1000 wide.
    # On full JSB this keeps the top-p singular values within 1e-3 (docs/lae.md).
    q = default_iterations(r) if iterations is None else int(iterations)
    if q < 0:
        raise SolverError(f"the number of Krylov iterations must be >= 0, got {iterations}")
    q = min(q, smallest // r - 1)  # the Krylov space cannot exceed the matrix's smaller side
    m = (q + 1) * r
    chunk = DEFAULT_CHUNK_BYTES if memory_budget_bytes is None else max(16 * 2**20, int(memory_budget_bytes) // 4)
    report(0.01, f"preparing FFTs of {len(pieces)} pieces ({rows} rows, {width} columns)")
    op = XiOperator(pieces, keys, lags, device=torch_device, dtype=torch_dtype, columns=r, chunk_bytes=chunk)
    if decay != 1.0:
        op = _WeightedXi(op, lag_weights(lags, decay), len(keys))

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
            # Block Lanczos: in exact arithmetic W is already orthogonal to all blocks but the last
            # two, so project those out first (cheap), then reorthogonalise against every block once
            # (classical Gram-Schmidt, the costly pass) to remove the rounding drift.
            recent = basis[:, max(0, j - 1) * r: (j + 1) * r]
            W -= recent @ (recent.T @ W)
            W -= previous @ (previous.T @ W)
            W, R = torch.linalg.qr(W, mode="reduced")
            if R.diagonal().abs().min() <= tiny * scale:
                # The Krylov space is (nearly) exhausted (rank reached): part of W was rounding
                # noise, so orthogonalise its normalised columns once more.
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
            # P^T P = Q^T Xi Xi^T Q is block tridiagonal: Xi Xi^T Q_j lies in span(Q_0..Q_{j+1}) by
            # construction, so only the diagonal and first off-diagonal blocks are computed.
            gram = torch.zeros((m, m), device=torch_device, dtype=torch.float64)
            for j in range(q + 1):
                here = slice(j * r, (j + 1) * r)
                gram[here, here] = (images[:, here].T @ images[:, here]).to(torch.float64)
                if j:
                    before = slice((j - 1) * r, j * r)
                    coupling = (images[:, here].T @ images[:, before]).to(torch.float64)
                    gram[here, before] = coupling
                    gram[before, here] = coupling.T
            # Only the top p eigenpairs are needed (LAPACK's MRRR computes just those: faster).
            import scipy.linalg

            values, vectors = scipy.linalg.eigh(gram.cpu().numpy(), subset_by_index=[m - p, m - 1],
                                                driver="evr")
            values, vectors = np.clip(values[::-1], 0, None), vectors[:, ::-1]
            S = torch.from_numpy(np.sqrt(values).copy())
            top = vectors / np.where(values > 0, np.sqrt(values), 1.0)
            U = images @ torch.from_numpy(top.copy()).to(device=torch_device, dtype=torch_dtype)
    U = U.to(device="cpu", dtype=torch.float64).numpy()
    S = S.to(device="cpu", dtype=torch.float64).numpy()
    # Symmetric (Loewdin) re-orthonormalisation in float64: float32 columns are orthonormal only to
    # ~1e-6 and ||B||_2 <= 1 relies on orthonormality; it moves each column as little as possible.
    values, vectors = np.linalg.eigh(U.T @ U)
    if values.min() > 1e-6:
        U = U @ (vectors @ np.diag(values**-0.5) @ vectors.T)
    else:  # some columns are (near) zero: p is above the rank, which fit_lae reports
        U = np.linalg.qr(U)[0]
    return fix_signs(U), S, str(torch_device), "float32" if torch_dtype == torch.float32 else "float64", q
