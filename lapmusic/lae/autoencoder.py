"""A fitted linear autoencoder for sequences: encode, decode, save and load."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lapmusic import N_KEYS
from lapmusic.core.errors import CheckpointError, LapMusicError
from lapmusic.core.io import atomic_save
from lapmusic.data.roll import check_roll

FORMAT_VERSION = 1


# ------------------------------------------------------------------------------------------ model
@dataclass
class LinearAutoencoder:
    """A fitted linear autoencoder for sequences: ``y_t = A x_t + B y_{t-1}``, ``y_0 = 0``.

    Made by :func:`lapmusic.lae.fit.fit_lae` or read by :meth:`load`.

    Attributes
    ----------
    A : ndarray of shape (p, 88)
        Input matrix, float64: ``U^(0)^T``, the first lag block of the top right singular vectors of ``Xi``.
    B : ndarray of shape (p, p)
        Recurrent matrix, float64: ``decay * sum_i U^(i+1)^T U^(i)``; its spectral norm is at most ``decay``.
    singular_values : ndarray of shape (k,)
        Singular values of ``Xi``, descending, ``k >= p`` (``exact``: all of them; ``approx``: the top ``p``).
    total_energy : float
        ``||Xi||_F^2`` (computed exactly, without ``Xi``), so component ``i`` explains the fraction
        ``singular_values[i]**2 / total_energy`` of the data's energy.
    p : int
        Number of hidden units.
    max_lag : int
        ``L``, the lag blocks of ``Xi`` used.
    solver : str
        ``"exact"`` or ``"approx"``.
    seconds : float
        Wall-clock time of the fit.
    rows, columns : int
        Shape of ``Xi``: ``N`` frames by ``88 L``.
    device, dtype : str
        Where and in which precision the SVD ran.
    iterations : int
        Krylov iterations of the approx solver (0 for ``exact``).
    seed : int
        Seed of the approx solver's start block.
    decay : float
        ``gamma``: lag ``k`` of ``Xi`` weighted by ``gamma**k`` (1: the paper's LAE).
    data_sha256 : str
        The hash of the pieces it was fitted on (:func:`lapmusic.data.fingerprint.pieces_fingerprint`), so that
        a run reusing it can check they are its own training pieces; ``""`` in files written before it existed.
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
    decay: float = 1.0
    data_sha256: str = ""

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
        """The states ``y_1 .. y_T`` of every piece, by the recursion ``y_t = A x_t + B y_{t-1}``, ``y_0 = 0``.

        Parameters
        ----------
        seqs : sequence of array-like of shape (T_i, 88)
            0/1 piano rolls (pieces of similar length are batched together).

        Returns
        -------
        list of ndarray of shape (T_i, p)
            float64 states, one array per piece, in the order given. With ``p = rank(Xi)`` they equal the
            rows of ``Xi U_p``.

        Raises
        ------
        LapMusicError
            A piece is not a 0/1 ``(T, 88)`` array.
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
        """Unroll a state into the ``n`` frames that led to it: ``x_t ~ A^T y_t``, ``y_{t-1} ~ B^T y_t``.

        Parameters
        ----------
        state : array-like of shape (p,)
            A state ``y``, e.g. the last row of :meth:`encode`'s output for a piece.
        n : int
            Number of frames to unroll, ``>= 0``.

        Returns
        -------
        ndarray of shape (n, 88)
            Real values (not 0/1), in document order: row ``n-1`` is ``A^T y``, row ``n-2`` is
            ``A^T B^T y``, and so on back in time. Exact when ``p = rank(Xi)`` and ``n`` is the piece's length.

        Raises
        ------
        LapMusicError
            ``state`` has the wrong shape or ``n`` is not a whole number ``>= 0``.
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
        """Write the model to an ``.npz`` file, atomically (no pickle; read it back with :meth:`load`).

        Parameters
        ----------
        path : str or os.PathLike
            The file to write; its folder is created when missing. It holds the arrays ``A``, ``B``,
            ``singular_values``, one 0-d array per other attribute, and a ``format`` marker.

        Raises
        ------
        lapmusic.core.io.StorageError
            The disk is full, the folder is read-only or not writable.
        """
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
            "data_sha256": np.array(str(self.data_sha256)),
        }
        atomic_save(path, lambda handle: np.savez(handle, **arrays))

    @classmethod
    def load(cls, path) -> "LinearAutoencoder":
        """Read a model written by :meth:`save` (no pickle).

        Parameters
        ----------
        path : str or os.PathLike
            An ``.npz`` file written by :meth:`save` (e.g. ``lapmusic lae --out FILE``).

        Returns
        -------
        LinearAutoencoder

        Raises
        ------
        CheckpointError
            The file is missing, not a lapmusic LAE file, unreadable, lacks an array, or its shapes
            disagree with its ``p``.
        """
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
                data_sha256=str(values.get("data_sha256", "")),
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
        """JSON-ready facts about the fit, for the CLI and the app.

        Parameters
        ----------
        top : int, default=10
            How many of the largest singular values to list.

        Returns
        -------
        dict
            The settings (``solver``, ``p``, ``max_lag``, ``rows``, ``columns``, ``seconds``, ``device``,
            ``dtype``, ``iterations``, ``seed``, ``decay``), ``singular_values_computed``,
            ``top_singular_values``, ``energy_captured``, ``total_energy`` and ``spectral_norm_B``.
        """
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
