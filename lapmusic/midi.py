"""Piano roll <-> MIDI.

A piano roll is a ``(T, 88)`` uint8 array of 0/1; column ``k`` is MIDI pitch ``21 + k`` and row ``t`` the
frame that starts at ``t * step_seconds``. Consecutive active frames of one key are one held note, so a
key struck again on the very next frame cannot be told apart from a held one (the benchmark rolls have
the same limitation).

MIDI files are parsed with ``pretty_midi`` (on top of ``mido``). Files from users are untrusted: size is
capped, and every failure becomes a :class:`~lapmusic.errors.DataError` that names the file.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

import numpy as np
import pretty_midi

from . import LOWEST_PITCH, N_KEYS
from .errors import DataError

DEFAULT_STEP_SECONDS = 0.25
"""Playback step when nothing better is known: a sixteenth note at 60 bpm, an eighth at 120."""

MAX_MIDI_BYTES = 8 * 1024 * 1024
"""Real MIDI files are kilobytes; anything larger than this is refused rather than parsed."""

MidiSource = Union[str, os.PathLike, bytes, "tuple[str, bytes]", pretty_midi.PrettyMIDI]


# ------------------------------------------------------------------------------ roll -> MIDI
def check_roll(roll, what: str = "piano roll") -> np.ndarray:
    """Return ``roll`` as a contiguous ``(T, 88)`` uint8 0/1 array, or raise :class:`DataError` saying what
    is off. The one check every module (data loading, the LAE, MIDI, plots) uses for a piece."""
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
    """Merge runs of active frames into notes: a list of ``(pitch, start_frame, end_frame)``, end exclusive.

    Sorted by start frame, then pitch.
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


def roll_to_midi(
    roll: np.ndarray,
    *,
    step_seconds: float = DEFAULT_STEP_SECONDS,
    program: int = 0,
    velocity: int = 90,
    split_at: int | None = None,
    primer_program: int | None = None,
) -> pretty_midi.PrettyMIDI:
    """Turn a ``(T, 88)`` roll into a ``PrettyMIDI`` object with one note per held run.

    ``step_seconds`` is the duration of one frame. ``program`` is the General MIDI program (0 = piano).
    With ``split_at = k`` frames ``[0, k)`` go on an instrument named "primer" (program ``primer_program``,
    default ``program``) and frames ``[k, T)`` on one named "continuation"; a note held across the split is
    cut there. Without it there is one instrument named "piano roll".
    """
    roll = check_roll(roll)
    if step_seconds <= 0:
        raise DataError(f"step_seconds must be positive, got {step_seconds}")
    if not 0 <= program <= 127 or not 1 <= velocity <= 127:
        raise DataError(f"program must be 0..127 and velocity 1..127, got {program} and {velocity}")
    # A tempo that makes one beat = 4 frames keeps the file readable in notation software.
    midi = pretty_midi.PrettyMIDI(initial_tempo=60.0 / (4 * step_seconds))

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


def midi_to_bytes(midi: pretty_midi.PrettyMIDI) -> bytes:
    """Serialise a ``PrettyMIDI`` object to standard MIDI file bytes."""
    buffer = io.BytesIO()
    midi.write(buffer)
    return buffer.getvalue()


def roll_to_midi_bytes(roll: np.ndarray, **kwargs) -> bytes:
    """``midi_to_bytes(roll_to_midi(roll, **kwargs))``."""
    return midi_to_bytes(roll_to_midi(roll, **kwargs))


# ------------------------------------------------------------------------------ MIDI -> roll
def load_midi(source: MidiSource, *, max_bytes: int = MAX_MIDI_BYTES) -> pretty_midi.PrettyMIDI:
    """Parse a MIDI file given as a path, raw bytes or ``(name, bytes)``; refuse bad input by name."""
    if isinstance(source, pretty_midi.PrettyMIDI):
        return source
    if isinstance(source, tuple):
        name, data = source
    elif isinstance(source, (bytes, bytearray)):
        name, data = "<bytes>", bytes(source)
    else:
        path = Path(source)
        name = path.name
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise DataError(f"{name}: cannot read the file ({exc.strerror or exc})") from None
        if size > max_bytes:
            raise DataError(f"{name}: too large ({size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB)")
        data = path.read_bytes()
    if len(data) == 0:
        raise DataError(f"{name}: the file is empty")
    if len(data) > max_bytes:
        raise DataError(f"{name}: too large ({len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB)")
    if not data.startswith(b"MThd"):
        # Catch the common case (a WAV, MP3, text...) before mido gives a cryptic message.
        raise DataError(f"{name}: not a MIDI file (it does not start with the 'MThd' header)")
    try:
        return pretty_midi.PrettyMIDI(io.BytesIO(data))
    except Exception as exc:  # mido/pretty_midi raise many types on corrupt data
        raise DataError(f"{name}: corrupt MIDI file ({type(exc).__name__}: {exc})") from None


def _frame_times(midi: pretty_midi.PrettyMIDI, end_time: float, step_seconds, steps_per_beat) -> np.ndarray:
    """Start time of every frame: a uniform grid, or beat subdivisions that follow tempo changes."""
    if (step_seconds is None) == (steps_per_beat is None):
        raise DataError("choose exactly one time step: step_seconds or steps_per_beat")
    if step_seconds is not None:
        if step_seconds <= 0:
            raise DataError(f"step_seconds must be positive, got {step_seconds}")
        return np.arange(0.0, end_time, step_seconds)
    if steps_per_beat < 1:
        raise DataError(f"steps_per_beat must be at least 1, got {steps_per_beat}")
    beats = np.asarray(midi.get_beats(), dtype=float)
    if beats.size < 2:
        beats = np.array([0.0, 0.5])
    # Extend past the last beat at the last beat length so that trailing notes get frames too.
    last = beats[-1] - beats[-2]
    while beats[-1] < end_time:
        beats = np.append(beats, beats[-1] + last)
    fractions = np.arange(steps_per_beat) / steps_per_beat
    grid = (beats[:-1, None] + np.diff(beats)[:, None] * fractions[None, :]).ravel()
    return grid[grid < end_time]


def fold_pitch(pitch: int) -> int:
    """Move a pitch outside 21..108 by whole octaves into the piano's range."""
    while pitch < LOWEST_PITCH:
        pitch += 12
    while pitch >= LOWEST_PITCH + N_KEYS:
        pitch -= 12
    return pitch


def midi_to_roll(
    source: MidiSource,
    *,
    step_seconds: float | None = None,
    steps_per_beat: int | None = None,
    drop_drums: bool = True,
    out_of_range: str = "fold",
    max_bytes: int = MAX_MIDI_BYTES,
) -> np.ndarray:
    """Sample a MIDI file onto a ``(T, 88)`` roll.

    Give exactly one of ``step_seconds`` (a uniform grid) or ``steps_per_beat`` (frames follow the file's
    beats, so tempo changes keep the musical grid). A note covers the frames whose start time lies in
    ``[round(start), round(end))`` on the grid, and at least one frame, so short notes are not lost.
    Drum tracks are dropped by default (their "pitches" are instruments). Pitches outside MIDI 21..108 are
    moved by octaves into range (``out_of_range="fold"``, default) or dropped (``"drop"``).
    """
    if out_of_range not in ("fold", "drop"):
        raise DataError(f"out_of_range must be 'fold' or 'drop', got {out_of_range!r}")
    midi = load_midi(source, max_bytes=max_bytes)
    notes = [
        note
        for instrument in midi.instruments
        if not (drop_drums and instrument.is_drum)
        for note in instrument.notes
    ]
    if not notes:
        return np.zeros((0, N_KEYS), dtype=np.uint8)
    end_time = max(note.end for note in notes)
    grid = _frame_times(midi, end_time, step_seconds, steps_per_beat)
    roll = np.zeros((len(grid), N_KEYS), dtype=np.uint8)
    starts = np.array([note.start for note in notes])
    ends = np.array([note.end for note in notes])
    # Nearest grid frame to each onset and offset.
    first = _nearest_index(grid, starts)
    last = np.maximum(_nearest_index(grid, ends), first + 1)
    for note, a, b in zip(notes, first, last):
        pitch = note.pitch
        if not LOWEST_PITCH <= pitch < LOWEST_PITCH + N_KEYS:
            if out_of_range == "drop":
                continue
            pitch = fold_pitch(pitch)
        roll[a:b, pitch - LOWEST_PITCH] = 1
    return roll


def _nearest_index(grid: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the grid point nearest to each time; times past the end map to ``len(grid)``."""
    right = np.searchsorted(grid, times, side="left")
    left = np.clip(right - 1, 0, len(grid) - 1)
    right_clipped = np.clip(right, 0, len(grid) - 1)
    step = np.diff(grid).mean() if len(grid) > 1 else 1.0
    right_time = np.where(right < len(grid), grid[right_clipped], grid[-1] + step)
    choose_left = (times - grid[left]) < (right_time - times)
    return np.where(choose_left & (right > 0), left, right)
