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
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from . import N_KEYS
from .errors import CheckpointError, LapMusicError, SolverError
from .io import atomic_save
from .lae_approx import (DEFAULT_CHUNK_BYTES, KRYLOV_TARGET_WIDTH, SEGMENT_CHOICES, XiOperator,  # noqa: F401
                         _approx_svd, _resolve_dtype, _WeightedXi, choose_segment, default_iterations,
                         multiply_adds, resolve_device)
from .midi import check_roll

SOLVERS = ("exact", "approx")
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
            raise CheckpointError(f"LAE file {path} does not exist; fit one with `lapmusic lae --out FILE`") from None
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
