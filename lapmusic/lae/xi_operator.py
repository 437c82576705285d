"""Products with the LAE's data matrix ``Xi`` and its transpose without building ``Xi``: :class:`XiOperator`.

A product ``Xi W`` is, per piece, a causal convolution of the piece with the lag blocks of ``W``, and
``Xi^T Y`` a cross-correlation; both are done with FFTs (torch, CPU or CUDA). :class:`WeightedXi` adds the
lag weighting. The approximate solver (:mod:`lapmusic.lae.approx`) is built on them.
"""

from __future__ import annotations

import numpy as np

DEFAULT_CHUNK_BYTES = 512 * 2**20  # working memory per FFT chunk in the approx solver


_SEGMENT_CHOICES = (8, 16, 32, 64, 128, 256, 512, 1024)


def _multiply_adds(lengths, lags: int, segment: int) -> int:
    """Frequency rows the partitioned convolution multiplies for these piece lengths and segment size.

    Segment ``i`` of a piece meets the lag partitions ``0..min(i, J-1)`` (``J = ceil(L / S)``), each
    pair costing ``S + 1`` frequencies of a ``(K) x (K, r)`` complex product.
    """
    counts = -(-np.asarray(lengths) // segment)
    partitions = -(-lags // segment)
    pairs = sum(int(np.minimum(np.arange(1, n + 1), partitions).sum()) for n in counts)
    return pairs * (segment + 1)


def _choose_segment(lengths, lags: int) -> int:
    """The segment size ``S`` (a power of two) that minimises ``_multiply_adds``.

    Short segments waste little padding but pair every segment with many lag partitions; long ones
    the reverse. Ties go to the shorter segment (less memory).
    """
    return min(_SEGMENT_CHOICES, key=lambda S: (_multiply_adds(lengths, lags, S), S))


class XiOperator:
    """Products with ``Xi`` and ``Xi^T`` without building ``Xi`` (torch; CPU or CUDA).

    ``Xi`` here is the data matrix restricted to the ``K = len(keys)`` keys in use: ``(N, K L)``, ``N``
    the total number of frames. A matrix ``W`` ``(K L, r)`` whose rows index ``Xi``'s columns is handled
    as lag blocks ``(L, K, r)``. A piece ``x`` (``(T, K)``) contributes the rows ``sum_k x_{t-k} W[k]`` to
    ``Xi W``: a causal convolution, and ``Xi^T Y`` collects the cross-correlations ``sum_t x_{t-k}^T Y_t``.

    Both use a uniformly partitioned overlap-save convolution (as for long audio reverbs): time is cut
    into segments of ``S`` frames and the lags into ``J = ceil(L / S)`` partitions of ``S``; every
    FFT has length ``2 S``. Output segment ``i`` is ``sum_j X_hat[i - j] W_hat[j]`` in the frequency
    domain, so for each partition ``j`` one batched complex matrix product covers every segment of
    every piece at once: large, efficient products, and one short FFT of ``W`` per partition, whatever
    the spread of piece lengths.

    Parameters
    ----------
    pieces : sequence of ndarray of shape (T_i, 88)
        The 0/1 training pieces (already validated).
    keys : array-like of int, shape (K,)
        The piano keys (columns 0..87) that ``Xi`` keeps, e.g. :func:`lapmusic.lae.xi.active_keys`.
    lags : int
        ``L``, the number of lag blocks.
    device : torch.device
        Where the spectra live and the products run.
    dtype : torch.dtype
        ``torch.float32`` or ``torch.float64`` (complex64 or complex128 spectra).
    columns : int
        The widest ``r`` that will be multiplied; caps the columns done per pass.
    chunk_bytes : int, default=DEFAULT_CHUNK_BYTES
        Working memory per pass; wider products are done in several passes of fewer columns.
    segment : int, optional
        ``S``; default: the power of two from 8 to 1024 with the fewest frequency-row products for
        these piece lengths.

    Attributes
    ----------
    rows : int
        ``N``, the rows of ``Xi``.
    width : int
        ``K``, the keys kept.
    segment : int
        ``S``, the segment length in frames.
    partitions : int
        ``J = ceil(L / S)``.
    columns_per_pass : int
        Columns of ``W`` or ``Y`` transformed at once within ``chunk_bytes``.
    """

    def __init__(self, pieces, keys, lags, *, device, dtype, columns: int,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, segment: int | None = None):
        import torch

        self.torch = torch
        self.device = device
        self.dtype = dtype
        self.lags = lags
        self.keys = np.asarray(keys)
        self.width = len(keys)
        lengths = np.array([x.shape[0] for x in pieces])
        self.rows = int(lengths.sum())
        S = int(segment) if segment else _choose_segment(lengths, lags)
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
        """``Xi W``.

        Parameters
        ----------
        W : torch.Tensor of shape (L * K, r)
            On the operator's device, in its dtype; row ``k K + j`` is lag ``k`` of key ``keys[j]``.

        Returns
        -------
        torch.Tensor of shape (N, r)
            Row ``t`` of a piece is ``sum_k x_{t-k} W[k]``, pieces in the order given.
        """
        torch = self.torch
        S, J, r = self.segment, self.partitions, W.shape[1]
        blocks = W.reshape(self.lags, self.width, r)
        out = torch.empty((self.rows, r), device=self.device, dtype=self.dtype)
        for c0 in range(0, r, self.columns_per_pass):
            part = blocks[:, :, c0:c0 + self.columns_per_pass]
            rc = part.shape[2]
            kernel = torch.zeros((J * S, self.width, rc), device=self.device, dtype=self.dtype)
            kernel[: self.lags] = part
            # .contiguous(): batched products on rfft's strides fall back to one slow copy per frequency.
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
        """``Xi^T Y``.

        Parameters
        ----------
        Y : torch.Tensor of shape (N, r)
            On the operator's device, in its dtype; one row per frame, pieces in the order given.

        Returns
        -------
        torch.Tensor of shape (L * K, r)
            Block ``k`` is ``sum_t x_{t-k}^T Y_t`` over every piece.
        """
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


class WeightedXi:
    """``Xi D`` for a diagonal ``D`` that weights lag block ``k`` by ``w_k``.

    ``(Xi D) W = Xi (D W)`` and ``(Xi D)^T Y = D (Xi^T Y)``, so the FFT products of :class:`XiOperator`
    serve unchanged.

    Parameters
    ----------
    op : XiOperator
        The products with the unweighted ``Xi``.
    weights : ndarray of shape (L,)
        ``w_k``, e.g. :func:`lapmusic.lae.xi.lag_weights`.
    width : int
        ``K``, the keys per lag block.
    """

    def __init__(self, op: XiOperator, weights: np.ndarray, width: int):
        import torch

        self.op = op
        self.scale = torch.from_numpy(np.repeat(weights, width)).to(device=op.device, dtype=op.dtype)[:, None]

    def matmul(self, W):
        """``(Xi D) W``: ``W`` ``(L * K, r)`` -> ``(N, r)``."""
        return self.op.matmul(self.scale * W)

    def rmatmul(self, Y):
        """``(Xi D)^T Y``: ``Y`` ``(N, r)`` -> ``(L * K, r)``."""
        return self.scale * self.op.rmatmul(Y)
