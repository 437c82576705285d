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
  when available, float32 by default). See docs/lae.md for the method and the benchmark.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from . import N_KEYS
from .errors import CheckpointError, LapMusicError, SolverError
from .io import atomic_save
from .midi import check_roll

SOLVERS = ("exact", "approx")
KRYLOV_TARGET_WIDTH = 1024  # default q: about this many Krylov columns, with 4 <= q <= 8
DEFAULT_CHUNK_BYTES = 512 * 2**20  # working memory per FFT chunk in the approx solver
FORMAT_VERSION = 1

ProgressCallback = Callable[[float, str], None]


# ------------------------------------------------------------------------------------------ model
@dataclass
class LinearAutoencoder:
    """A fitted linear autoencoder for sequences.

    ``A`` ``(p, 88)``, ``B`` ``(p, p)`` (float64); ``singular_values`` ``(k,)`` descending with
    ``k >= p`` (``exact``: all of them; ``approx``: the top ``p``); ``total_energy`` is
    ``||Xi||_F^2`` (computed exactly, without ``Xi``), so the fraction of the data's energy that
    component ``i`` explains is ``singular_values[i]**2 / total_energy``.
    """

    A: np.ndarray
    B: np.ndarray
    singular_values: np.ndarray
    total_energy: float
    p: int
    max_lag: int
    solver: str
    seconds: float
    rows: int
    columns: int
    device: str = "cpu"
    dtype: str = "float64"
    iterations: int = 0
    seed: int = 0
    decay: float = 1.0  # lag k of Xi weighted by decay**k (1: the paper's LAE)

    # ---------------------------------------------------------------- spectrum
    @property
    def energy_per_component(self) -> np.ndarray:
        """``(k,)``: fraction of ``||Xi||_F^2`` each singular value explains (``sv**2 / total``)."""
        if self.total_energy <= 0:
            return np.zeros_like(self.singular_values)
        return self.singular_values**2 / self.total_energy

    @property
    def energy_captured(self) -> float:
        """Fraction of ``||Xi||_F^2`` kept by the ``p`` units: ``sum(sv[:p]**2) / ||Xi||_F^2``."""
        return float(np.sum(self.energy_per_component[: self.p]))

    # ---------------------------------------------------------------- encode / decode
    def encode(self, seqs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """States ``y_1..y_T`` of every piece: each ``(T, 88)`` piece gives a ``(T, p)`` float64 array.

        Runs the recursion ``y_t = A x_t + B y_{t-1}`` (``y_0 = 0``), pieces of similar length batched.
        """
        pieces = [check_roll(seq, f"piece {index}") for index, seq in enumerate(seqs)]
        out: list[np.ndarray | None] = [None] * len(pieces)
        order = sorted(range(len(pieces)), key=lambda i: pieces[i].shape[0])
        A_T = np.ascontiguousarray(self.A.T)
        B_T = np.ascontiguousarray(self.B.T)
        start = 0
        while start < len(order):
            # A batch: pieces whose lengths are within 25 % (+8) of the shortest one, so little padding.
            shortest = pieces[order[start]].shape[0]
            stop = start
            while (stop < len(order) and stop - start < 256
                   and pieces[order[stop]].shape[0] <= 1.25 * shortest + 8):
                stop += 1
            batch = order[start:stop]
            longest = pieces[batch[-1]].shape[0]
            frames = np.zeros((longest, len(batch), N_KEYS))
            for j, i in enumerate(batch):
                frames[: pieces[i].shape[0], j] = pieces[i]
            driven = frames @ A_T  # (T, n, p): A x_t for every t at once
            states = np.empty_like(driven)
            previous = np.zeros((len(batch), self.p))
            for t in range(longest):
                previous = driven[t] + previous @ B_T
                states[t] = previous
            for j, i in enumerate(batch):
                out[i] = np.ascontiguousarray(states[: pieces[i].shape[0], j])
            start = stop
        return out  # type: ignore[return-value]

    def decode(self, state: np.ndarray, n: int) -> np.ndarray:
        """Unroll a state ``(p,)`` into ``(n, 88)`` frames in document order (real values, not 0/1).

        Row ``n-1`` is ``A^T y``, row ``n-2`` is ``A^T B^T y``, and so on back in time.
        """
        y = np.asarray(state, dtype=np.float64)
        if y.shape != (self.p,):
            raise LapMusicError(f"decode needs a state of shape ({self.p},), got {y.shape}")
        if int(n) != n or n < 0:
            raise LapMusicError(f"decode needs a number of frames n >= 0, got {n!r}")
        frames = np.empty((int(n), N_KEYS))
        for back in range(int(n)):
            frames[int(n) - 1 - back] = self.A.T @ y
            y = self.B.T @ y
        return frames

    # ---------------------------------------------------------------- persistence
    def save(self, path) -> None:
        """Write an ``.npz`` (arrays ``A``, ``B``, ``singular_values`` and the settings), atomically."""
        arrays = {
            "format": np.array("lapmusic-lae"),
            "format_version": np.array(FORMAT_VERSION),
            "A": np.asarray(self.A, dtype=np.float64),
            "B": np.asarray(self.B, dtype=np.float64),
            "singular_values": np.asarray(self.singular_values, dtype=np.float64),
            "total_energy": np.array(float(self.total_energy)),
            "p": np.array(int(self.p)),
            "max_lag": np.array(int(self.max_lag)),
            "solver": np.array(str(self.solver)),
            "seconds": np.array(float(self.seconds)),
            "rows": np.array(int(self.rows)),
            "columns": np.array(int(self.columns)),
            "device": np.array(str(self.device)),
            "dtype": np.array(str(self.dtype)),
            "iterations": np.array(int(self.iterations)),
            "seed": np.array(int(self.seed)),
            "decay": np.array(float(self.decay)),
        }
        atomic_save(path, lambda handle: np.savez(handle, **arrays))

    @classmethod
    def load(cls, path) -> "LinearAutoencoder":
        """Read a file written by :meth:`save` (no pickle); a foreign or corrupt file raises CheckpointError."""
        try:
            with np.load(path, allow_pickle=False) as data:
                if "format" not in data or str(data["format"]) != "lapmusic-lae":
                    raise CheckpointError(f"{path} is not a lapmusic LAE file (no 'format' marker)")
                values = {name: data[name] for name in data.files}
        except CheckpointError:
            raise
        except FileNotFoundError:
            raise CheckpointError(f"LAE file {path} does not exist") from None
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"cannot read LAE file {path}: {exc}") from None
        try:
            model = cls(
                A=np.asarray(values["A"], dtype=np.float64),
                B=np.asarray(values["B"], dtype=np.float64),
                singular_values=np.asarray(values["singular_values"], dtype=np.float64),
                total_energy=float(values["total_energy"]),
                p=int(values["p"]),
                max_lag=int(values["max_lag"]),
                solver=str(values["solver"]),
                seconds=float(values["seconds"]),
                rows=int(values["rows"]),
                columns=int(values["columns"]),
                device=str(values.get("device", "cpu")),
                dtype=str(values.get("dtype", "float64")),
                iterations=int(values.get("iterations", 0)),
                seed=int(values.get("seed", 0)),
                decay=float(values.get("decay", 1.0)),
            )
        except KeyError as exc:
            raise CheckpointError(f"LAE file {path} lacks the array {exc}") from None
        p = model.p
        if model.A.shape != (p, N_KEYS) or model.B.shape != (p, p) or model.singular_values.ndim != 1:
            raise CheckpointError(
                f"LAE file {path} is inconsistent: p={p}, A {model.A.shape}, B {model.B.shape}"
            )
        return model

    def summary(self, top: int = 10) -> dict:
        """JSON-able facts for the CLI and the app."""
        return {
            "solver": self.solver,
            "p": int(self.p),
            "max_lag": int(self.max_lag),
            "rows": int(self.rows),
            "columns": int(self.columns),
            "seconds": round(float(self.seconds), 4),
            "device": self.device,
            "dtype": self.dtype,
            "iterations": int(self.iterations),
            "seed": int(self.seed),
            "decay": float(self.decay),
            "singular_values_computed": int(self.singular_values.size),
            "top_singular_values": [float(v) for v in self.singular_values[:top]],
            "energy_captured": float(self.energy_captured),
            "total_energy": float(self.total_energy),
            "spectral_norm_B": float(np.linalg.norm(self.B, 2)) if self.p else 0.0,
        }


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
        U, singular_values, device_name, dtype_name, used_iterations = _approx_svd(
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


def _fix_signs(U: np.ndarray) -> np.ndarray:
    """Flip each column so that its largest-magnitude entry is positive (SVD signs are arbitrary)."""
    if U.size == 0:
        return U
    pivots = np.argmax(np.abs(U), axis=0)
    signs = np.sign(U[pivots, np.arange(U.shape[1])])
    signs[signs == 0] = 1.0
    return U * signs


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
    return _fix_signs(Vt.T), singular_values


# ------------------------------------------------------------------------------------------ approx
def resolve_device(device: str | None):
    """``auto`` -> CUDA when available else CPU; ``cuda`` without a GPU is a SolverError."""
    import torch

    name = (device or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SolverError("device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise SolverError(f"unknown device {device!r}; use auto, cpu or cuda") from None


def _resolve_dtype(dtype):
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


def _approx_svd(pieces, keys, lags, p, *, device, seed, report, memory_budget_bytes, dtype,
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

    torch_device = resolve_device(device)
    torch_dtype = _resolve_dtype(dtype)
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
    return _fix_signs(U), S, str(torch_device), "float32" if torch_dtype == torch.float32 else "float64", q
