"""Piano rolls as arrays: the checks every reader and writer applies, and their notes."""

from __future__ import annotations

import numpy as np

from lapmusic import LOWEST_PITCH, N_KEYS
from lapmusic.core.errors import DataError

DEFAULT_STEP_SECONDS = 0.25
"""Playback step when nothing better is known: a sixteenth note at 60 bpm, an eighth at 120."""


def check_roll(roll, what: str = "piano roll") -> np.ndarray:
    """Check that ``roll`` is a piano roll; the one check every module uses for a piece.

    Parameters
    ----------
    roll : array-like of shape (T, 88)
        Frames of 0/1 (bool, integer or float), column ``k`` = MIDI pitch ``21 + k``.
    what : str, default="piano roll"
        How the roll is called in error messages (e.g. ``"JSB_Chorales.mat train[3]"``).

    Returns
    -------
    roll : ndarray of shape (T, 88), uint8
        The same values, contiguous (a copy only when needed).

    Raises
    ------
    DataError
        If ``roll`` is not an array of that shape, not numeric, or holds values other than 0 and 1.
    """
    try:
        array = np.asarray(roll)
    except Exception as exc:  # e.g. ragged nested lists
        raise DataError(f"{what} is not an array of frames: {exc}") from None
    if array.ndim != 2 or array.shape[1] != N_KEYS:
        raise DataError(
            f"{what}: expected a (T, {N_KEYS}) piano roll, got shape {array.shape}; a roll must have "
            f"shape (T, {N_KEYS}), one column per key (MIDI pitches {LOWEST_PITCH}..{LOWEST_PITCH + N_KEYS - 1})"
        )
    if array.dtype == np.bool_:
        bad = False
    elif array.dtype == np.uint8:
        bad = bool((array > 1).any())
    elif np.issubdtype(array.dtype, np.number):
        bad = bool(((array != 0) & (array != 1)).any())  # NaN fails both comparisons: refused too
    else:
        raise DataError(f"{what} has dtype {array.dtype}; piano rolls hold 0/1 numbers")
    if bad:
        raise DataError(
            f"{what} is not binary: values must be 0 or 1 (a roll holds only 0 and 1, key off/on); "
            "binarise it first, e.g. roll > 0"
        )
    return np.ascontiguousarray(array, dtype=np.uint8)


def roll_to_notes(roll: np.ndarray) -> list[tuple[int, int, int]]:
    """Merge runs of active frames into notes.

    Parameters
    ----------
    roll : array-like of shape (T, 88)
        A piano roll (see :func:`check_roll`).

    Returns
    -------
    notes : list of tuple of (int, int, int)
        ``(pitch, start_frame, end_frame)`` with ``end_frame`` exclusive, sorted by start frame, then pitch.

    Raises
    ------
    DataError
        If ``roll`` is not a piano roll.
    """
    roll = check_roll(roll)
    # Pad with a silent frame on both sides so that every run has an on- and an off-edge.
    padded = np.zeros((roll.shape[0] + 2, N_KEYS), dtype=np.int8)
    padded[1:-1] = roll
    edges = np.diff(padded, axis=0)
    starts_t, starts_k = np.nonzero(edges == 1)
    ends_t, ends_k = np.nonzero(edges == -1)
    # Within one key, runs alternate start/end, so sorting both by (key, time) pairs them up.
    start_order = np.lexsort((starts_t, starts_k))
    end_order = np.lexsort((ends_t, ends_k))
    notes = [
        (int(LOWEST_PITCH + k), int(s), int(e))
        for k, s, e in zip(starts_k[start_order], starts_t[start_order], ends_t[end_order])
    ]
    notes.sort(key=lambda note: (note[1], note[0]))
    return notes
