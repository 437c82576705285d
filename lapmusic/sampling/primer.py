"""Primers: the frames a sample starts from, written as text (``none``, ``test:0:16``, ``chord:C4,E4,G4:2``).

:func:`parse_primer` turns such a specification into the ``(k, 88)`` roll that
:func:`lapmusic.sampling.sample.generate` copies into the first ``k`` frames of every sample.
"""

from __future__ import annotations

import re

import numpy as np

from lapmusic import HIGHEST_PITCH, LOWEST_PITCH, N_KEYS
from lapmusic.core.errors import LapMusicError
from lapmusic.data.files import SPLITS


def parse_primer(spec: str | None, dataset_key: str | None, *, dataset=None) -> np.ndarray | None:
    """Turn a primer specification into a ``(k, 88)`` roll, or ``None`` for no primer.

    The accepted forms (case-insensitive keywords):

    ``none`` (also ``silence`` or empty)
        Start from silence.
    ``SPLIT:INDEX:FRAMES``
        The first FRAMES frames of piece INDEX (from 0) of split ``train``, ``valid`` or ``test`` of the
        dataset, e.g. ``test:0:16``.
    ``chord:P1,P2,...``
        One frame holding these pitches, as MIDI numbers (21-108) or note names (``C4`` = 60, ``Eb4``,
        ``F#3``; ``#`` and ``b`` may repeat), e.g. ``chord:60,64,67`` or ``chord:C4,E4,G4``.
    ``chord:P1,P2,...:FRAMES``
        The same chord held for FRAMES frames.

    Parameters
    ----------
    spec : str or None
        The specification (None: ``none``).
    dataset_key : str or None
        The dataset a ``SPLIT:INDEX:FRAMES`` primer reads (loaded with
        :func:`lapmusic.data.registry.load_dataset` unless ``dataset`` is given).
    dataset : lapmusic.data.dataset.Dataset, optional
        The dataset, already loaded.

    Returns
    -------
    ndarray of shape (k, 88) or None
        uint8 0/1 frames, or None for no primer.

    Raises
    ------
    LapMusicError
        The form is not understood, a number is not a whole number or too small, a pitch is off the
        88-key piano or not a note name, a piece primer has no dataset, INDEX is past the split's pieces
        or FRAMES past the piece's length.
    """
    text = (spec or "none").strip()
    if text.lower() in ("", "none", "silence"):
        return None
    if text.lower().startswith("chord:"):
        return _parse_chord(text[len("chord:"):], text)
    parts = text.split(":")
    if len(parts) != 3 or parts[0].lower() not in SPLITS:
        raise LapMusicError(
            f"primer {text!r} is not understood; use none, SPLIT:INDEX:FRAMES (e.g. test:0:16) "
            "or chord:60,64,67"
        )
    split = parts[0].lower()
    index = _parse_int_field(parts[1], "piece index", text, minimum=0)
    frames = _parse_int_field(parts[2], "number of frames", text, minimum=1)
    if dataset is None:
        if not dataset_key:
            raise LapMusicError(
                f"primer {text!r} needs a dataset, but none is known for this run; use none or chord:... instead"
            )
        from lapmusic.data.registry import load_dataset  # imported here: loading a dataset is only needed for this form

        dataset = load_dataset(dataset_key)
    pieces = dataset.split(split)
    if index >= len(pieces):
        raise LapMusicError(
            f"primer {text!r}: the {split} split of {getattr(dataset, 'key', dataset_key)} has {len(pieces)} "
            f"pieces, so INDEX must be 0..{len(pieces) - 1}"
        )
    piece = np.asarray(pieces[index])
    if frames > piece.shape[0]:
        raise LapMusicError(
            f"primer {text!r}: {split} piece {index} is only {piece.shape[0]} frames long; "
            f"ask for at most {piece.shape[0]} frames"
        )
    return (piece[:frames] > 0).astype(np.uint8)


_NOTE_NAME = re.compile(r"^([A-Ga-g])([#b]*)(-?\d+)$")
_PITCH_CLASS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def _parse_chord(body: str, spec: str) -> np.ndarray:
    """``P1,P2,...[:FRAMES]`` -> the chord's frame repeated FRAMES (default 1) times."""
    notes_text, _, frames_text = body.partition(":")
    frames = _parse_int_field(frames_text, "number of frames", spec, minimum=1) if frames_text else 1
    tokens = [token.strip() for token in notes_text.split(",") if token.strip()]
    if not tokens:
        raise LapMusicError(f"primer {spec!r} names no pitches; write e.g. chord:60,64,67 or chord:C4,E4,G4")
    frame = np.zeros(N_KEYS, dtype=np.uint8)
    for token in tokens:
        pitch = _pitch_number(token, spec)
        if not LOWEST_PITCH <= pitch <= HIGHEST_PITCH:
            raise LapMusicError(
                f"primer {spec!r}: pitch {token} ({pitch}) is off the 88-key piano; "
                f"use MIDI pitches {LOWEST_PITCH}-{HIGHEST_PITCH} (A0-C8)"
            )
        frame[pitch - LOWEST_PITCH] = 1
    return np.repeat(frame[None, :], frames, axis=0)


def _pitch_number(token: str, spec: str) -> int:
    """A MIDI number (``60``) or a note name (``C4``, ``Eb4``, ``F#3``) as a MIDI pitch; not range-checked."""
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    match = _NOTE_NAME.match(token)
    if not match:
        raise LapMusicError(
            f"primer {spec!r}: {token!r} is neither a MIDI pitch number nor a note name like C4, Eb4 or F#3"
        )
    letter, accidentals, octave = match.groups()
    offset = accidentals.count("#") - accidentals.count("b")
    return 12 * (int(octave) + 1) + _PITCH_CLASS[letter.upper()] + offset  # C4 = 60


def _parse_int_field(text: str, what: str, spec: str, *, minimum: int) -> int:
    """One whole-number field of a primer, at least ``minimum``; the error names ``what`` and ``spec``."""
    try:
        value = int(text)
    except ValueError:
        raise LapMusicError(f"primer {spec!r}: the {what} {text!r} is not a whole number") from None
    if value < minimum:
        raise LapMusicError(f"primer {spec!r}: the {what} must be at least {minimum}, got {value}")
    return value
