"""Reading the benchmarks' files, checked and safe: the TCN repository's ``.mat`` files and the original
Boulanger-Lewandowski ``.pickle`` files (Python-2 pickles of ``{split: [piece = [frame = [pitch, ...]]]}``).

Both give ``{"train": [...], "valid": [...], "test": [...]}`` of ``(T, 88)`` uint8 0/1 piano rolls, column ``k``
= MIDI pitch ``21 + k``; split sizes are checked against the published ones when given. Pickles are read with
an unpickler that allows only numpy scalars and arrays, so a hostile file cannot run code.
:mod:`lapmusic.data.benchmark` uses these to load the registered datasets.
"""

from __future__ import annotations

import io
import math
import os
import pickle
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from lapmusic import LOWEST_PITCH, N_KEYS
from lapmusic.core.errors import DataError
from lapmusic.data.roll import check_roll

SPLITS = ("train", "valid", "test")


# ------------------------------------------------------------------------------ validation
def _check_split_sizes(splits: dict[str, list], expected: dict[str, int] | None, origin: str) -> None:
    if expected is None:
        return
    got = {name: len(splits[name]) for name in SPLITS}
    if got != expected:
        raise DataError(
            f"{origin}: split sizes {got} differ from the published ones {expected}; "
            "the file is not the expected dataset"
        )


# ------------------------------------------------------------------------------ .mat files
def load_mat(path: str | os.PathLike, expected_sizes: dict[str, int] | None = None) -> dict[str, list[np.ndarray]]:
    """Read a TCN-style ``.mat`` file (keys traindata/validdata/testdata) into checked rolls."""
    import scipy.io

    path = Path(path)
    try:
        content = scipy.io.loadmat(str(path))
    except Exception as exc:
        raise DataError(f"{path.name}: not a readable MATLAB file ({type(exc).__name__}: {exc})") from None
    splits: dict[str, list[np.ndarray]] = {}
    for name in SPLITS:
        field_name = f"{name}data"
        if field_name not in content:
            raise DataError(f"{path.name}: no '{field_name}' entry; expected traindata/validdata/testdata")
        cells = np.asarray(content[field_name]).ravel()
        splits[name] = [check_roll(cell, f"{path.name} {name}[{i}]") for i, cell in enumerate(cells)]
    _check_split_sizes(splits, expected_sizes, path.name)
    return splits


# ------------------------------------------------------------------------------ original pickles
class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for the original Boulanger-Lewandowski files, which are Python-2 pickles of nested lists
    whose notes may be numpy scalars. Only the globals needed to rebuild a numpy scalar are allowed;
    anything else (a function call, an arbitrary class) is refused, so a hostile file cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        # Python 3 pickles (protocol 2) store a numpy scalar's raw bytes via _codecs.encode(str, "latin1").
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            if name in ("scalar", "_reconstruct"):
                try:  # numpy >= 2 moved the module; old pickles name the numpy 1 path
                    from numpy._core import multiarray
                except ImportError:  # pragma: no cover - numpy 1
                    from numpy.core import multiarray
                return getattr(multiarray, name)
            if module == "_codecs":
                import codecs

                return codecs.encode
            return getattr(np, name)
        raise DataError(
            f"refused to load: the pickle asks for '{module}.{name}', which a music dataset never needs "
            "(it may be malicious); use the .mat files instead"
        )


def safe_unpickle(data: bytes, what: str = "pickle"):
    """Load an untrusted pickle allowing only numpy scalars/arrays and plain containers."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except DataError as exc:
        raise DataError(f"{what}: {exc}") from None
    except Exception as exc:
        raise DataError(f"{what}: not a readable dataset pickle ({type(exc).__name__}: {exc})") from None


def _as_pitch(value) -> int | None:
    """A whole-number MIDI pitch (int, numpy integer, or a float such as 60.0), else None."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    return None


def pitches_to_roll(frames: Sequence[Iterable[int]], what: str = "piece") -> np.ndarray:
    """Turn a list of frames, each a list of MIDI pitches 21..108, into a ``(T, 88)`` roll.

    Anything else (a piece or frame that is not a list, a pitch that is a string, None, NaN or a fraction)
    is refused with a :class:`DataError` naming the piece, frame and value."""
    if not isinstance(frames, (list, tuple)):
        raise DataError(f"{what}: expected a list of frames, got {type(frames).__name__}; "
                        "the file is not a dataset of piano rolls")
    roll = np.zeros((len(frames), N_KEYS), dtype=np.uint8)
    for t, frame in enumerate(frames):
        if not isinstance(frame, (list, tuple, np.ndarray)):
            raise DataError(f"{what}: frame {t} is {type(frame).__name__} {frame!r:.40}, not a list of pitches; "
                            "the file is not a dataset of piano rolls")
        for value in frame:
            pitch = _as_pitch(value)
            if pitch is None:
                raise DataError(f"{what}: frame {t} holds {value!r:.40} ({type(value).__name__}), not a MIDI "
                                "pitch number; the file is damaged or not a dataset of piano rolls")
            if not LOWEST_PITCH <= pitch < LOWEST_PITCH + N_KEYS:
                raise DataError(f"{what}: pitch {pitch} at frame {t} is outside MIDI 21..108")
            roll[t, pitch - LOWEST_PITCH] = 1
    return roll


def roll_to_pitches(roll: np.ndarray) -> list[list[int]]:
    """Inverse of :func:`pitches_to_roll` (the original pickles' format)."""
    return [[int(LOWEST_PITCH + k) for k in np.flatnonzero(frame)] for frame in roll]


def load_pickle(path: str | os.PathLike, expected_sizes: dict[str, int] | None = None,
                name: str | None = None) -> dict[str, list[np.ndarray]]:
    """Read an original Boulanger-Lewandowski ``.pickle`` (dict train/valid/test of pitch lists).

    ``name`` is how the file is called in error messages (default: the file name).
    """
    path = Path(path)
    label = name or path.name
    content = safe_unpickle(path.read_bytes(), label)
    if not isinstance(content, dict) or not all(split in content for split in SPLITS):
        raise DataError(f"{label}: expected a dict with 'train', 'valid' and 'test' lists of pieces")
    splits = {}
    for split in SPLITS:
        pieces = content[split]
        if not isinstance(pieces, list):
            raise DataError(f"{label}: '{split}' is not a list of pieces")
        splits[split] = [pitches_to_roll(piece, f"{label} {split}[{i}]") for i, piece in enumerate(pieces)]
    _check_split_sizes(splits, expected_sizes, label)
    return splits
