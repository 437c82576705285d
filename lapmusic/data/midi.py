"""Piano roll <-> MIDI.

A piano roll is a ``(T, 88)`` uint8 array of 0/1; column ``k`` is MIDI pitch ``21 + k`` and row ``t`` the
frame that starts at ``t * step_seconds``. Consecutive active frames of one key are one held note, so a
key struck again on the very next frame cannot be told apart from a held one (the benchmark rolls have
the same limitation).

MIDI files are written with ``pretty_midi``. They are *read* by :func:`lapmusic.data.midifile.read_midi`, whose
every cost is bounded (files from users are untrusted; ``pretty_midi`` sizes a tick-to-time table by the file's
last tick). :func:`midi_to_roll` computes the piano roll's size from the notes' end and checks it against
:class:`~lapmusic.data.midifile.MidiLimits` before allocating it. Every refusal is a
:class:`~lapmusic.core.errors.DataError` that names the file, the limit and what to do.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from typing import Union

import numpy as np
import pretty_midi

from lapmusic import LOWEST_PITCH, N_KEYS
from lapmusic.core.errors import DataError
from lapmusic.data.midifile import MidiLimits, read_midi
from lapmusic.data.roll import DEFAULT_STEP_SECONDS, check_roll, roll_to_notes

QPM_RANGE = (20.0, 400.0)
"""Tempi read from files are clipped to this range (quarter notes per minute): beyond it is a broken file."""

MidiSource = Union[str, os.PathLike, bytes, "tuple[str, bytes]", pretty_midi.PrettyMIDI]


def roll_to_midi(
    roll: np.ndarray,
    *,
    step_seconds: float = DEFAULT_STEP_SECONDS,
    program: int = 0,
    velocity: int = 90,
    split_at: int | None = None,
    primer_program: int | None = None,
    frames_per_beat: int | None = None,
    time_signature: tuple[int, int] | None = None,
) -> pretty_midi.PrettyMIDI:
    """Turn a piano roll into a ``PrettyMIDI`` object with one note per held run.

    Note times are ``frame * step_seconds`` whatever the tempo; the tempo written into the file only says
    how notation software counts them.

    Parameters
    ----------
    roll : array-like of shape (T, 88)
        A piano roll (see :func:`check_roll`).
    step_seconds : float, default=0.25
        Duration of one frame.
    program : int, default=0
        General MIDI program, 0..127 (0 = acoustic grand piano).
    velocity : int, default=90
        Velocity of every note, 1..127.
    split_at : int, optional
        Frames ``[0, split_at)`` go on an instrument named "primer" and frames ``[split_at, T)`` on one
        named "continuation"; a note held across the split is cut there. Without it there is one
        instrument named "piano roll".
    primer_program : int, optional
        Program of the "primer" instrument; default ``program``.
    frames_per_beat : int, optional
        Frames per quarter note, which sets the tempo written into the file; default
        :func:`frames_per_beat_for` (e.g. 1 for the 0.5 s quarter-note frames of JSB/Bach = 120 bpm).
    time_signature : tuple of (int, int), optional
        ``(numerator, denominator)`` written at time 0, e.g. ``(3, 4)``; default none, which MIDI readers
        (and ``pretty_midi``'s writer) take as 4/4.

    Returns
    -------
    midi : pretty_midi.PrettyMIDI

    Raises
    ------
    DataError
        If ``roll`` is not a piano roll, or a setting is out of range.
    """
    roll = check_roll(roll)
    if step_seconds <= 0:
        raise DataError(f"step_seconds must be positive, got {step_seconds}")
    if not 0 <= program <= 127 or not 1 <= velocity <= 127:
        raise DataError(f"program must be 0..127 and velocity 1..127, got {program} and {velocity}")
    if frames_per_beat is None:
        frames_per_beat = frames_per_beat_for(step_seconds)
    if frames_per_beat < 1:
        raise DataError(f"frames_per_beat must be at least 1, got {frames_per_beat}")
    midi = pretty_midi.PrettyMIDI(initial_tempo=60.0 / (frames_per_beat * step_seconds))
    if time_signature is not None:
        numerator, denominator = (int(v) for v in time_signature)
        if not (1 <= numerator <= 255 and denominator in (1, 2, 4, 8, 16, 32, 64)):
            raise DataError(f"time_signature must be (1..255, a power of two 1..64), got {time_signature}")
        midi.time_signature_changes.append(pretty_midi.TimeSignature(numerator, denominator, 0.0))

    def add_part(part: np.ndarray, offset: int, name: str, part_program: int) -> None:
        instrument = pretty_midi.Instrument(program=part_program, name=name)
        for pitch, start, end in roll_to_notes(part):
            instrument.notes.append(
                pretty_midi.Note(
                    velocity=velocity,
                    pitch=pitch,
                    start=(offset + start) * step_seconds,
                    end=(offset + end) * step_seconds,
                )
            )
        midi.instruments.append(instrument)

    if split_at is None:
        add_part(roll, 0, "piano roll", program)
    else:
        split = int(np.clip(split_at, 0, roll.shape[0]))
        add_part(roll[:split], 0, "primer", program if primer_program is None else primer_program)
        add_part(roll[split:], split, "continuation", program)
    return midi


def frames_per_beat_for(step_seconds: float) -> int:
    """Frames per quarter note for a frame of ``step_seconds``: the power of two (1, 2, 4, 8) whose tempo
    ``60 / (n * step_seconds)`` bpm is nearest 120 bpm on a log scale, so 0.5 s -> 1 (120 bpm, JSB/Bach
    quarter notes), 0.25 s -> 2 (120 bpm, eighths), 0.125 s -> 4.
    """
    return min((1, 2, 4, 8), key=lambda n: abs(math.log(60.0 / (n * step_seconds) / 120.0)))


def midi_to_bytes(midi: pretty_midi.PrettyMIDI) -> bytes:
    """Serialise a ``PrettyMIDI`` object to Standard MIDI File bytes.

    Parameters
    ----------
    midi : pretty_midi.PrettyMIDI

    Returns
    -------
    data : bytes
        What ``midi.write`` would write to a ``.mid`` file.
    """
    buffer = io.BytesIO()
    midi.write(buffer)
    return buffer.getvalue()


def roll_to_midi_bytes(roll: np.ndarray, **kwargs) -> bytes:
    """``midi_to_bytes(roll_to_midi(roll, **kwargs))``."""
    return midi_to_bytes(roll_to_midi(roll, **kwargs))


# ------------------------------------------------------------------------------ notes -> roll
def fold_pitch(pitch: int) -> int:
    """Move a pitch outside 21..108 by whole octaves into the piano's range."""
    while pitch < LOWEST_PITCH:
        pitch += 12
    while pitch >= LOWEST_PITCH + N_KEYS:
        pitch -= 12
    return pitch


def _fold_pitches(pitch: np.ndarray) -> np.ndarray:
    """:func:`fold_pitch` on an array."""
    pitch = pitch.astype(np.int64)
    low = pitch < LOWEST_PITCH
    pitch[low] += 12 * -(-(LOWEST_PITCH - pitch[low]) // 12)
    high = pitch > LOWEST_PITCH + N_KEYS - 1
    pitch[high] -= 12 * -(-(pitch[high] - (LOWEST_PITCH + N_KEYS - 1)) // 12)
    return pitch


def _describe_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:,.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:,.0f} minutes"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:,.0f} hours"
    return f"{seconds / 86400:,.0f} days"


def _too_many_frames(name: str, frames: float, limits: MidiLimits):
    count = f"{int(frames):,}" if frames < 1e12 else f"{frames:.1e}"
    raise DataError(
        f"{name}: its piano roll would have {count} frames; the limit is {limits.max_frames:,} "
        "(LAPMUSIC_MAX_MIDI_FRAMES); use a coarser time step (fewer steps per beat, or longer steps), "
        "cut the file, or raise the limit"
    )


@dataclass(frozen=True)
class MidiPiece:
    """A MIDI file as a piano roll, with the meter it was written in.

    Attributes
    ----------
    roll : ndarray of shape (T, 88), uint8
        The piano roll (:func:`midi_to_roll`).
    qpm : float
        Quarter notes per minute in effect at the first note (120 when the file sets no tempo), clipped to
        :data:`QPM_RANGE`.
    time_signature : tuple of (int, int) or None
        The file's first time signature, e.g. ``(3, 4)``; None when it has none (readers assume 4/4).
    """

    roll: np.ndarray
    qpm: float
    time_signature: tuple[int, int] | None


def midi_to_roll(source: MidiSource, **kwargs) -> np.ndarray:
    """Sample a MIDI file onto a piano roll: ``read_midi_piece(source, **kwargs).roll``.

    Parameters
    ----------
    source : str, os.PathLike, bytes, tuple of (str, bytes) or pretty_midi.PrettyMIDI
        As for :func:`read_midi_piece`.
    **kwargs
        ``step_seconds``, ``steps_per_beat``, ``drop_drums``, ``out_of_range``, ``max_bytes``, ``limits``.

    Returns
    -------
    roll : ndarray of shape (T, 88), uint8

    Raises
    ------
    DataError
        As for :func:`read_midi_piece`.
    """
    return read_midi_piece(source, **kwargs).roll


def read_midi_piece(
    source: MidiSource,
    *,
    step_seconds: float | None = None,
    steps_per_beat: int | None = None,
    drop_drums: bool = True,
    out_of_range: str = "fold",
    max_bytes: int | None = None,
    limits: MidiLimits | None = None,
) -> MidiPiece:
    """Sample a MIDI file onto a piano roll and read its tempo and time signature.

    A note covers frames ``[round(start), round(end))`` of the grid, and at least one, so short notes are
    not lost; ``T`` is the last note's end frame. Every limit is checked before the roll (or anything of
    its size) is allocated, so the cost is O(bytes + notes + T * 88).

    Parameters
    ----------
    source : str, os.PathLike, bytes, tuple of (str, bytes) or pretty_midi.PrettyMIDI
        A path, raw bytes, a ``(name, bytes)`` pair (the name starts every error message) or a
        ``PrettyMIDI`` object.
    step_seconds : float, optional
        A uniform grid in seconds: frame ``f`` starts at ``f * step_seconds``.
    steps_per_beat : int, optional
        Frames per quarter note: frame ``f`` starts at tick ``f * ticks_per_beat / steps_per_beat``, so
        tempo changes keep the musical grid. Give exactly one of ``step_seconds`` and ``steps_per_beat``.
    drop_drums : bool, default=True
        Leave out channel 10 (its "pitches" are percussion instruments).
    out_of_range : {"fold", "drop"}, default="fold"
        Pitches outside MIDI 21..108 are moved by octaves into range, or dropped.
    max_bytes : int, optional
        Overrides the byte limit of ``limits``.
    limits : MidiLimits, optional
        What the file may cost; default :meth:`MidiLimits.from_env`.

    Returns
    -------
    piece : MidiPiece
        The roll (``(0, 88)`` when no note is left), the tempo at the first note and the time signature.

    Raises
    ------
    DataError
        If a setting is invalid, or the file is unreadable, not MIDI, truncated or corrupt, larger than
        ``limits.max_bytes``, holds more than ``limits.max_notes`` notes, ends after ``limits.max_seconds``
        or its roll would have more than ``limits.max_frames`` frames. The message names the file, the
        limit and what to do.
    """
    if out_of_range not in ("fold", "drop"):
        raise DataError(f"out_of_range must be 'fold' or 'drop', got {out_of_range!r}")
    if (step_seconds is None) == (steps_per_beat is None):
        raise DataError("choose exactly one time step: step_seconds or steps_per_beat")
    if step_seconds is not None and not (math.isfinite(step_seconds) and step_seconds > 0):
        raise DataError(f"step_seconds must be positive, got {step_seconds}")
    if steps_per_beat is not None and steps_per_beat < 1:
        raise DataError(f"steps_per_beat must be at least 1, got {steps_per_beat}")
    limits = limits or MidiLimits.from_env(max_bytes=max_bytes)
    if isinstance(source, pretty_midi.PrettyMIDI):
        source = ("<PrettyMIDI>", midi_to_bytes(source))
    notes = read_midi(source, limits)
    keep = ~notes.drum if drop_drums else np.ones(len(notes), dtype=bool)
    start, end, pitch = notes.start[keep], notes.end[keep], notes.pitch[keep]
    if out_of_range == "drop":
        inside = (pitch >= LOWEST_PITCH) & (pitch < LOWEST_PITCH + N_KEYS)
        start, end, pitch = start[inside], end[inside], pitch[inside]
    else:
        pitch = _fold_pitches(pitch)
    first_tempo = notes.tempo_us[np.searchsorted(notes.tempo_ticks, start.min() if len(start) else 0, side="right") - 1]
    qpm = float(np.clip(60e6 / max(int(first_tempo), 1), *QPM_RANGE))
    if len(start) == 0:
        return MidiPiece(np.zeros((0, N_KEYS), dtype=np.uint8), qpm, notes.time_signature)
    last_tick = int(end.max())
    length = float(notes.seconds(np.array([last_tick]))[0])
    if length > limits.max_seconds:
        raise DataError(
            f"{notes.name}: too long: its last note ends after {_describe_seconds(length)}; the limit is "
            f"{_describe_seconds(limits.max_seconds)} per file (LAPMUSIC_MAX_MIDI_SECONDS); cut it into "
            "shorter pieces, or raise the limit"
        )
    # The roll's length in floating point first, so that no integer below can overflow on absurd settings.
    if step_seconds is not None:
        estimate = length / step_seconds
    else:
        estimate = last_tick * float(steps_per_beat) / notes.ticks_per_beat
    if estimate > limits.max_frames:
        _too_many_frames(notes.name, math.floor(estimate + 0.5) if estimate < 1e12 else estimate, limits)
    if step_seconds is not None:
        first = np.floor(notes.seconds(start) / step_seconds + 0.5).astype(np.int64)
        last = np.floor(notes.seconds(end) / step_seconds + 0.5).astype(np.int64)
    else:
        # Round half up in exact integers: frame = floor(tick * spb / tpb + 1/2).
        scale, tpb = int(steps_per_beat), notes.ticks_per_beat
        first = (2 * start * scale + tpb) // (2 * tpb)
        last = (2 * end * scale + tpb) // (2 * tpb)
    last = np.maximum(last, first + 1)
    frames = int(last.max())
    if frames > limits.max_frames:  # the estimate's rounding, or a one-frame note at the very end
        _too_many_frames(notes.name, frames, limits)
    # Each note adds +1 at its first frame and -1 after its last; a running sum > 0 means the key sounds.
    keys = pitch - LOWEST_PITCH
    counts = np.zeros((frames + 1, N_KEYS), dtype=np.int32)
    np.add.at(counts, (first, keys), 1)
    np.add.at(counts, (last, keys), -1)
    return MidiPiece((np.cumsum(counts[:-1], axis=0) > 0).astype(np.uint8), qpm, notes.time_signature)
