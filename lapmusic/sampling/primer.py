"""Primers: the frames a sample starts from, written as text (``none``, ``test:0:16``, ``chord:C4,E4,G4:2``,
``mysong.mid``).

:func:`load_primer` turns such a specification into a :class:`Primer`: the ``(k, 88)`` roll that
:func:`lapmusic.sampling.sample.generate` copies into the first ``k`` frames of every sample, and, for a MIDI
file, the tempo and time signature the continuation keeps. :func:`parse_primer` returns the roll alone.
Every form is bounded (:mod:`lapmusic.sampling.limits`) before its roll is allocated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from lapmusic import HIGHEST_PITCH, LOWEST_PITCH, N_KEYS
from lapmusic.core.errors import DataError, LapMusicError
from lapmusic.data.files import SPLITS
from lapmusic.sampling.limits import MAX_PRIMER_FRAMES, check_primer_frames

_MIDI_SPEC = re.compile(r"^(?P<path>.*\.midi?)(?::(?P<frames>[^:]*))?$", re.IGNORECASE)


@dataclass(frozen=True)
class Primer:
    """The frames a sample starts from and the meter they were written in.

    Attributes
    ----------
    roll : ndarray of shape (k, 88) or None
        uint8 0/1 frames, or None for no primer.
    qpm : float or None
        Quarter notes per minute of a MIDI primer (None: the dataset's tempo).
    time_signature : tuple of (int, int) or None
        A MIDI primer's time signature, e.g. ``(3, 4)`` (None: the dataset's, else 4/4).
    """

    roll: np.ndarray | None
    qpm: float | None = None
    time_signature: tuple[int, int] | None = None


def parse_primer(spec: str | None, dataset_key: str | None, *, dataset=None,
                 frames_per_beat: int = 1) -> np.ndarray | None:
    """Turn a primer specification into a ``(k, 88)`` roll: ``load_primer(...).roll``.

    Parameters
    ----------
    spec, dataset_key, dataset, frames_per_beat
        As for :func:`load_primer`.

    Returns
    -------
    ndarray of shape (k, 88) or None
        uint8 0/1 frames, or None for no primer.

    Raises
    ------
    LapMusicError
        As for :func:`load_primer`.
    """
    return load_primer(spec, dataset_key, dataset=dataset, frames_per_beat=frames_per_beat).roll


def load_primer(spec: str | None, dataset_key: str | None, *, dataset=None, frames_per_beat: int = 1) -> Primer:
    """Turn a primer specification into a :class:`Primer`.

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
    ``PATH.mid`` or ``PATH.mid:FRAMES`` (also ``.midi``)
        A MIDI file (drums left out) on a grid of ``frames_per_beat`` frames per quarter note, whole or
        its first FRAMES frames; its tempo and time signature are kept.

    Every primer has at most :data:`lapmusic.sampling.limits.MAX_PRIMER_FRAMES` frames.

    Parameters
    ----------
    spec : str or None
        The specification (None: ``none``).
    dataset_key : str or None
        The dataset a ``SPLIT:INDEX:FRAMES`` primer reads (loaded with
        :func:`lapmusic.data.registry.load_dataset` unless ``dataset`` is given).
    dataset : lapmusic.data.dataset.Dataset, optional
        The dataset, already loaded.
    frames_per_beat : int, default=1
        Frames per quarter note of the model's dataset: the grid a MIDI primer is read on.

    Returns
    -------
    Primer
        Its ``roll`` is None for no primer.

    Raises
    ------
    LapMusicError
        The form is not understood, a number is not a whole number or too small, a pitch is off the
        88-key piano or not a note name, a piece primer has no dataset, INDEX is past the split's pieces
        or FRAMES past the piece's length, the primer is longer than the limit, or a MIDI file cannot be
        read, is over a :class:`lapmusic.data.midifile.MidiLimits` limit or has no notes.
    """
    text = (spec or "none").strip()
    if text.lower() in ("", "none", "silence"):
        return Primer(None)
    if text.lower().startswith("chord:"):
        return Primer(_parse_chord(text[len("chord:"):], text))
    midi = _MIDI_SPEC.match(text)
    if midi:
        frames = midi.group("frames")
        return primer_from_midi(midi.group("path"), frames_per_beat=frames_per_beat,
                                frames=_parse_int_field(frames, "number of frames", text, minimum=1)
                                if frames is not None else None)
    parts = text.split(":")
    if len(parts) != 3 or parts[0].lower() not in SPLITS:
        raise LapMusicError(
            f"primer {text!r} is not understood; use none, SPLIT:INDEX:FRAMES (e.g. test:0:16), "
            "chord:60,64,67 or a MIDI file (song.mid, or song.mid:32 for its first 32 frames)"
        )
    split = parts[0].lower()
    index = _parse_int_field(parts[1], "piece index", text, minimum=0)
    frames = _parse_int_field(parts[2], "number of frames", text, minimum=1)
    check_primer_frames(frames, f"primer {text!r}")
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
    return Primer((piece[:frames] > 0).astype(np.uint8))


def primer_from_midi(source, *, frames_per_beat: int = 1, frames: int | None = None) -> Primer:
    """A MIDI file as a primer, read by the bounded reader (:func:`lapmusic.data.midi.read_midi_piece`).

    Parameters
    ----------
    source : str, os.PathLike, bytes or tuple of (str, bytes)
        A path, or an upload's ``(name, bytes)``.
    frames_per_beat : int, default=1
        Frames per quarter note (the model's grid: 1 for JSB, 2 for user datasets by default).
    frames : int, optional
        Keep the first FRAMES frames; default the whole file.

    Returns
    -------
    Primer
        The roll (drums left out, pitches folded into the piano's range), the tempo at the first note and
        the first time signature.

    Raises
    ------
    LapMusicError
        The file cannot be read or is over a MIDI limit (the reader's message), has no notes, is shorter
        than ``frames``, or its primer would be longer than :data:`MAX_PRIMER_FRAMES` frames.
    """
    from lapmusic.data.midi import read_midi_piece  # imported here: pretty_midi is only needed for this form

    try:
        piece = read_midi_piece(source, steps_per_beat=int(frames_per_beat))
    except DataError as exc:
        raise LapMusicError(f"primer {exc}") from None  # the reader's message names the file and the limit
    name = source[0] if isinstance(source, tuple) else str(source)
    roll = piece.roll
    if not roll.any():
        raise LapMusicError(f"primer {name}: the file has no notes (drums are left out); choose another file")
    if frames is not None:
        if frames > len(roll):
            raise LapMusicError(f"primer {name} is only {len(roll)} frames long; ask for at most {len(roll)} frames")
        check_primer_frames(frames, f"primer {name}:{frames}")
        roll = roll[:frames]
    elif len(roll) > MAX_PRIMER_FRAMES:
        raise LapMusicError(
            f"primer {name} is {len(roll):,} frames long ({frames_per_beat} a quarter note); a primer may have at "
            f"most {MAX_PRIMER_FRAMES} frames: use its start ({name}:{MAX_PRIMER_FRAMES}) or a shorter file"
        )
    return Primer(roll.astype(np.uint8), piece.qpm, piece.time_signature)


_NOTE_NAME = re.compile(r"^([A-Ga-g])([#b]*)(-?\d+)$")
_PITCH_CLASS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def _parse_chord(body: str, spec: str) -> np.ndarray:
    """``P1,P2,...[:FRAMES]`` -> the chord's frame repeated FRAMES (default 1) times."""
    notes_text, _, frames_text = body.partition(":")
    frames = _parse_int_field(frames_text, "number of frames", spec, minimum=1) if frames_text else 1
    check_primer_frames(frames, f"primer {spec!r}")  # before np.repeat allocates them
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
