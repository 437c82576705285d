"""Piano roll <-> MIDI.

A piano roll is a ``(T, 88)`` uint8 array of 0/1; column ``k`` is MIDI pitch ``21 + k`` and row ``t`` the
frame that starts at ``t * step_seconds``. Consecutive active frames of one key are one held note, so a
key struck again on the very next frame cannot be told apart from a held one (the benchmark rolls have
the same limitation).

MIDI files are written with ``pretty_midi``. They are *read* by this module's own scanner of the Standard
MIDI File format (:func:`read_midi`), not by ``pretty_midi``/``mido``: files from users are untrusted, and
``pretty_midi`` sizes a tick-to-time table by the file's last tick (a 52-byte file with one note at tick
10,000,000 costs it minutes and gigabytes). The scanner makes one pass over the bytes, keeps only the notes and
the tempo map, and stops as soon as a limit of :class:`MidiLimits` is passed; the piano roll's size is computed
from the notes' end before it is allocated. Every refusal is a :class:`~lapmusic.errors.DataError` that names
the file, the limit and what to do.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import pretty_midi

from . import LOWEST_PITCH, N_KEYS
from .errors import DataError

DEFAULT_STEP_SECONDS = 0.25
"""Playback step when nothing better is known: a sixteenth note at 60 bpm, an eighth at 120."""

MAX_MIDI_BYTES = 8 * 1024 * 1024
"""Real MIDI files are kilobytes; anything larger than this is refused rather than parsed (default of
``MidiLimits.max_bytes``)."""

MidiSource = Union[str, os.PathLike, bytes, "tuple[str, bytes]", pretty_midi.PrettyMIDI]

# ------------------------------------------------------------------------------ limits
def megabytes(size: int) -> str:
    """A byte count as users read it: ``16777216 -> '16 MB'``, ``17000000 -> '16.2 MB'``, ``5000 -> '5 KB'``
    (KB, MB = 2**10, 2**20 bytes, as file managers count)."""
    if size < 2**10:
        return f"{size} bytes"
    if size < 2**20:
        return f"{size / 2**10:.0f} KB"
    value = size / 2**20
    return f"{value:.0f} MB" if value.is_integer() else f"{value:.1f} MB"


def _env_number(variable: str, default, kind=int):
    """A positive limit from the environment (``default`` when unset); a bad value is a clear error."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = kind(float(text)) if kind is int else kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value <= 0:
        raise DataError(f"{variable}={text!r} is not a positive number; unset it to use the default {default}")
    return value


@dataclass(frozen=True)
class MidiLimits:
    """What one MIDI file may cost, checked before anything of its size is allocated.

    Every limit can be raised (or lowered) with an environment variable, read by :meth:`from_env`:

    ========================== ============================== ==========================================
    field                      variable                       default
    ========================== ============================== ==========================================
    ``max_bytes``              ``LAPMUSIC_MAX_MIDI_BYTES``    8 MB per file
    ``max_seconds``            ``LAPMUSIC_MAX_MIDI_SECONDS``  1200 s (20 minutes) from start to last note
    ``max_notes``              ``LAPMUSIC_MAX_MIDI_NOTES``    200,000 notes per file
    ``max_frames``             ``LAPMUSIC_MAX_MIDI_FRAMES``   20,000 frames per piano roll
    ========================== ============================== ==========================================
    """

    max_bytes: int = MAX_MIDI_BYTES
    max_seconds: float = 1200.0
    max_notes: int = 200_000
    max_frames: int = 20_000

    @classmethod
    def from_env(cls, **overrides) -> "MidiLimits":
        values = {
            "max_bytes": _env_number("LAPMUSIC_MAX_MIDI_BYTES", cls.max_bytes),
            "max_seconds": _env_number("LAPMUSIC_MAX_MIDI_SECONDS", cls.max_seconds, float),
            "max_notes": _env_number("LAPMUSIC_MAX_MIDI_NOTES", cls.max_notes),
            "max_frames": _env_number("LAPMUSIC_MAX_MIDI_FRAMES", cls.max_frames),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


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
    frames_per_beat: int | None = None,
) -> pretty_midi.PrettyMIDI:
    """Turn a ``(T, 88)`` roll into a ``PrettyMIDI`` object with one note per held run.

    ``step_seconds`` is the duration of one frame. ``program`` is the General MIDI program (0 = piano).
    With ``split_at = k`` frames ``[0, k)`` go on an instrument named "primer" (program ``primer_program``,
    default ``program``) and frames ``[k, T)`` on one named "continuation"; a note held across the split is
    cut there. Without it there is one instrument named "piano roll".

    Note times are ``frame * step_seconds`` whatever the tempo; the tempo written into the file only says
    how notation software counts them: ``frames_per_beat`` frames make one quarter note (default
    :func:`frames_per_beat_for`, e.g. 1 for the 0.5 s quarter-note frames of JSB/Bach = 120 bpm).
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

    (Until this was chosen per step, every file said 4 frames per beat, so Bach's quarter-note frames were
    written as sixteenths at 30 bpm.)
    """
    return min((1, 2, 4, 8), key=lambda n: abs(math.log(60.0 / (n * step_seconds) / 120.0)))


def midi_to_bytes(midi: pretty_midi.PrettyMIDI) -> bytes:
    """Serialise a ``PrettyMIDI`` object to standard MIDI file bytes."""
    buffer = io.BytesIO()
    midi.write(buffer)
    return buffer.getvalue()


def roll_to_midi_bytes(roll: np.ndarray, **kwargs) -> bytes:
    """``midi_to_bytes(roll_to_midi(roll, **kwargs))``."""
    return midi_to_bytes(roll_to_midi(roll, **kwargs))


# ------------------------------------------------------------------------------ MIDI -> notes
@dataclass
class MidiNotes:
    """The notes of a MIDI file in ticks, and its tempo map. Arrays have one entry per note.

    ``start``/``end`` are ticks (int64, end >= start); ``pitch`` MIDI pitches 0..127; ``drum`` True on
    channel 10. The tempo map is piecewise constant: from ``tempo_ticks[i]`` on, a quarter note
    (``ticks_per_beat`` ticks) lasts ``tempo_us[i]`` microseconds; ``tempo_ticks[0] == 0`` (120 bpm until
    the file's first tempo event).
    """

    name: str
    ticks_per_beat: int
    start: np.ndarray
    end: np.ndarray
    pitch: np.ndarray
    drum: np.ndarray
    tempo_ticks: np.ndarray
    tempo_us: np.ndarray

    def seconds(self, ticks: np.ndarray) -> np.ndarray:
        """Time in seconds of each tick: ``s(t) = S[i] + (t - t_i) * us_i / (1e6 * ticks_per_beat)`` with
        ``i`` the last tempo change at or before ``t`` and ``S[i]`` the time of that change."""
        ticks = np.asarray(ticks, dtype=np.float64)
        per_tick = self.tempo_us.astype(np.float64) / (1e6 * self.ticks_per_beat)
        change_seconds = np.concatenate(([0.0], np.cumsum(np.diff(self.tempo_ticks) * per_tick[:-1])))
        index = np.searchsorted(self.tempo_ticks, ticks, side="right") - 1
        return change_seconds[index] + (ticks - self.tempo_ticks[index]) * per_tick[index]

    def __len__(self) -> int:
        return len(self.start)


class _Refused(Exception):
    """Raised inside the scanner; turned into a DataError naming the file."""


def _refuse_corrupt(detail: str):
    raise _Refused(f"corrupt MIDI file ({detail}); open and save it again in a MIDI editor, or leave it out")


def _refuse_truncated(detail: str):
    raise _Refused(
        f"truncated MIDI file: {detail}; the file was cut short (an interrupted download or copy?): "
        "get it again"
    )


_SYSTEM_LENGTHS = {0xF1: 1, 0xF2: 2, 0xF3: 1, 0xF6: 0, 0xF8: 0, 0xFA: 0, 0xFB: 0, 0xFC: 0, 0xFE: 0}


def _scan_track(data: bytes, pos: int, end: int, track: int, limits: "MidiLimits", notes: list,
                tempos: list, counted: list) -> None:
    """Scan one ``MTrk`` chunk ``data[pos:end]``; append ``(start, end, pitch, drum)`` to ``notes`` and
    ``(tick, microseconds per quarter)`` to ``tempos``. ``counted[0]`` counts note-ons over the file.

    Note pairing follows ``pretty_midi``: a note-off closes every open note of its (channel, pitch) that
    started on an earlier tick; one that started on the same tick stays open if others were closed (a
    re-struck key) and is dropped otherwise (a zero-length note). Tempo events count only in the first
    track, where the standard puts the tempo map (``pretty_midi`` reads them there too).
    """
    tick = 0
    status = 0  # running status: the last channel-message status byte
    open_notes: dict[int, list[int]] = {}
    add = notes.append
    where = f"track {track}"
    while pos < end:
        byte = data[pos]
        pos += 1
        delta = byte & 0x7F
        length = 1
        while byte & 0x80:
            if pos >= end:
                _refuse_truncated(f"{where} ends inside a time value")
            if length == 4:
                _refuse_corrupt(f"{where}: a time value longer than 4 bytes at byte {pos}")
            byte = data[pos]
            pos += 1
            delta = (delta << 7) | (byte & 0x7F)
            length += 1
        tick += delta
        if pos >= end:
            _refuse_truncated(f"{where} ends after a time value, without its event")
        kind = data[pos]
        if kind & 0x80:
            pos += 1
            if kind < 0xF0:
                status = kind
        elif status:
            kind = status  # running status: this byte is already the first data byte
        else:
            _refuse_corrupt(f"{where}: data byte 0x{kind:02x} at byte {pos} without a status byte")
        if kind < 0xF0:
            high = kind & 0xF0
            if high == 0xC0 or high == 0xD0:
                pos += 1
                continue
            if pos + 2 > end:
                _refuse_truncated(f"{where} ends inside a message")
            key, velocity = data[pos], data[pos + 1]
            pos += 2
            if (key | velocity) & 0x80:
                _refuse_corrupt(f"{where}: data byte above 127 at byte {pos - 2}")
            if high == 0x90 and velocity:
                counted[0] += 1
                if counted[0] > limits.max_notes:
                    raise _Refused(
                        f"too many notes: more than {limits.max_notes:,} (the limit, LAPMUSIC_MAX_MIDI_NOTES); "
                        "split the file into shorter pieces, or raise the limit"
                    )
                index = ((kind & 0x0F) << 7) | key
                starts = open_notes.get(index)
                if starts is None:
                    open_notes[index] = [tick]
                else:
                    starts.append(tick)
            elif high == 0x80 or high == 0x90:
                starts = open_notes.pop(((kind & 0x0F) << 7) | key, None)
                if starts is None:
                    continue  # a note-off without a note-on: ignored
                drum = (kind & 0x0F) == 9
                if len(starts) == 1:  # the common case, without building lists
                    if starts[0] != tick:
                        add((starts[0], tick, key, drum))
                    continue
                closing = [s for s in starts if s != tick]
                if closing and len(closing) < len(starts):
                    open_notes[((kind & 0x0F) << 7) | key] = [s for s in starts if s == tick]
                for start in closing:
                    add((start, tick, key, drum))
            continue
        if kind == 0xFF or kind == 0xF0 or kind == 0xF7:
            if kind == 0xFF:
                if pos >= end:
                    _refuse_truncated(f"{where} ends inside a meta event")
                meta = data[pos]
                pos += 1
            size = 0
            for _ in range(4):
                if pos >= end:
                    _refuse_truncated(f"{where} ends inside an event length")
                byte = data[pos]
                pos += 1
                size = (size << 7) | (byte & 0x7F)
                if not byte & 0x80:
                    break
            else:
                _refuse_corrupt(f"{where}: an event length longer than 4 bytes at byte {pos}")
            if pos + size > end:
                _refuse_truncated(f"{where} ends inside an event of {size:,} bytes")
            if kind == 0xFF:
                if meta == 0x51 and size == 3 and track == 1:
                    tempos.append((tick, (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]))
                elif meta == 0x2F:
                    return  # end of track; bytes after it are ignored, as mido does
            pos += size
            continue
        if kind not in _SYSTEM_LENGTHS:
            _refuse_corrupt(f"{where}: unknown status byte 0x{kind:02x} at byte {pos - 1}")
        pos += _SYSTEM_LENGTHS[kind]
    # Notes still open at the end of the track have no end: dropped, as pretty_midi does.


def read_midi_bytes(source: MidiSource, max_bytes: int = MAX_MIDI_BYTES) -> tuple[str, bytes]:
    """``(name, bytes)`` of a path, raw bytes, ``(name, bytes)`` or ``PrettyMIDI``; the size is checked
    (from the file system for a path, before reading it)."""
    if isinstance(source, pretty_midi.PrettyMIDI):
        return "<PrettyMIDI>", midi_to_bytes(source)
    if isinstance(source, tuple):
        name, data = source
    elif isinstance(source, (bytes, bytearray)):
        name, data = "<bytes>", bytes(source)
    else:
        path = Path(source)
        name = path.name
        try:
            size = path.stat().st_size
            if size > max_bytes:
                _too_large(name, size, max_bytes)  # refused before reading a byte
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"{name}: cannot read the file ({exc.strerror or exc})") from None
    if len(data) == 0:
        raise DataError(f"{name}: the file is empty")
    if len(data) > max_bytes:
        _too_large(name, len(data), max_bytes)
    return name, bytes(data)


def _too_large(name: str, size: int, max_bytes: int):
    raise DataError(
        f"{name}: too large ({megabytes(size)}, {size:,} bytes; the limit is {megabytes(max_bytes)} per file, "
        "LAPMUSIC_MAX_MIDI_BYTES); real MIDI files are kilobytes: is it a MIDI file? Split it, or raise the limit"
    )


def read_midi(source: MidiSource, limits: MidiLimits | None = None) -> MidiNotes:
    """Scan a MIDI file (see :data:`MidiSource`) into :class:`MidiNotes`, refusing by name what is not a
    MIDI file, truncated, corrupt, SMPTE-timed, too large or holding too many notes.

    Cost: one pass over at most ``limits.max_bytes`` bytes; memory: the notes (at most ``max_notes``).
    """
    limits = limits or MidiLimits.from_env()
    name, data = read_midi_bytes(source, limits.max_bytes)
    if not data.startswith(b"MThd"):
        # Catch the common case (a WAV, MP3, text...) with a plain message.
        raise DataError(f"{name}: not a MIDI file (it does not start with the 'MThd' header)")
    try:
        return _scan(name, data, limits)
    except _Refused as exc:
        raise DataError(f"{name}: {exc}") from None


def _scan(name: str, data: bytes, limits: MidiLimits) -> MidiNotes:
    if len(data) < 14:
        _refuse_truncated(f"the header needs 14 bytes, the file has {len(data)}")
    header_size = int.from_bytes(data[4:8], "big")
    if header_size < 6:
        _refuse_corrupt(f"a header of {header_size} bytes, at least 6 expected")
    fmt = int.from_bytes(data[8:10], "big")
    n_tracks = int.from_bytes(data[10:12], "big")
    division = int.from_bytes(data[12:14], "big")
    if fmt > 2:
        _refuse_corrupt(f"unknown format {fmt}; MIDI files are format 0, 1 or 2")
    if division & 0x8000:
        raise _Refused("uses SMPTE time code instead of ticks per beat, which is not supported; "
                       "save it again with a musical (ticks per beat) time base")
    if division == 0:
        _refuse_corrupt("0 ticks per beat")
    notes: list = []
    tempos: list = []
    counted = [0]
    pos = 8 + header_size
    found = 0
    while pos + 8 <= len(data):
        kind, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "big")
        pos += 8
        if pos + size > len(data):
            if size > limits.max_bytes:
                _refuse_corrupt(f"chunk {found + 1} claims {size:,} bytes, more than a MIDI file holds")
            _refuse_truncated(
                f"track {found + 1} declares {size:,} bytes but only {len(data) - pos:,} remain"
            )
        if kind == b"MTrk":
            found += 1
            _scan_track(data, pos, pos + size, found, limits, notes, tempos, counted)
        pos += size  # other chunk types are skipped, as the standard says
    if found < n_tracks:
        _refuse_truncated(f"the header announces {n_tracks} tracks, the file holds {found}")
    tempos.sort(key=lambda item: item[0])  # stable: of two changes on one tick, the later one wins below
    tempo_ticks, tempo_us = [0], [500_000]
    for tick, us in tempos:
        if tick == tempo_ticks[-1]:
            tempo_us[-1] = us
        else:
            tempo_ticks.append(tick)
            tempo_us.append(us)
    table = np.array(notes, dtype=np.int64).reshape(-1, 4)
    return MidiNotes(
        name=name, ticks_per_beat=division, start=table[:, 0], end=table[:, 1],
        pitch=table[:, 2].astype(np.int16), drum=table[:, 3].astype(bool),
        tempo_ticks=np.array(tempo_ticks, dtype=np.int64), tempo_us=np.array(tempo_us, dtype=np.int64),
    )


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


def midi_to_roll(
    source: MidiSource,
    *,
    step_seconds: float | None = None,
    steps_per_beat: int | None = None,
    drop_drums: bool = True,
    out_of_range: str = "fold",
    max_bytes: int | None = None,
    limits: MidiLimits | None = None,
) -> np.ndarray:
    """Sample a MIDI file onto a ``(T, 88)`` roll.

    Give exactly one of ``step_seconds`` (a uniform grid in seconds: frame ``f`` starts at
    ``f * step_seconds``) or ``steps_per_beat`` (frames per quarter note: frame ``f`` starts at tick
    ``f * ticks_per_beat / steps_per_beat``, so tempo changes keep the musical grid). A note covers frames
    ``[round(start), round(end))`` of the grid, and at least one, so short notes are not lost; ``T`` is the
    last note's end frame. Drum tracks are dropped by default (their "pitches" are instruments). Pitches
    outside MIDI 21..108 are moved by octaves into range (``out_of_range="fold"``, default) or dropped
    (``"drop"``).

    ``limits`` (default :meth:`MidiLimits.from_env`; ``max_bytes`` overrides its byte limit) bound the
    work: the file is refused, by name and with the limit, when it is too large, holds too many notes,
    lasts too long or its roll would have too many frames; all of these are known before the roll (or
    anything of its size) is allocated. The cost is then O(bytes + notes + T * 88).
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
    notes = read_midi(source, limits)
    keep = ~notes.drum if drop_drums else np.ones(len(notes), dtype=bool)
    start, end, pitch = notes.start[keep], notes.end[keep], notes.pitch[keep]
    if out_of_range == "drop":
        inside = (pitch >= LOWEST_PITCH) & (pitch < LOWEST_PITCH + N_KEYS)
        start, end, pitch = start[inside], end[inside], pitch[inside]
    else:
        pitch = _fold_pitches(pitch)
    if len(start) == 0:
        return np.zeros((0, N_KEYS), dtype=np.uint8)
    last_tick = int(end.max())
    length = float(notes.seconds(np.array([last_tick]))[0])
    if length > limits.max_seconds:
        raise DataError(
            f"{notes.name}: too long: its last note ends after {_describe_seconds(length)}; the limit is "
            f"{_describe_seconds(limits.max_seconds)} per file (LAPMUSIC_MAX_MIDI_SECONDS); cut it into "
            "shorter pieces, or raise the limit"
        )
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
    if frames > limits.max_frames:
        raise DataError(
            f"{notes.name}: its piano roll would have {frames:,} frames; the limit is {limits.max_frames:,} "
            "(LAPMUSIC_MAX_MIDI_FRAMES); use a coarser time step (fewer steps per beat, or longer steps), "
            "cut the file, or raise the limit"
        )
    # Each note adds +1 at its first frame and -1 after its last; a running sum > 0 means the key sounds.
    keys = pitch - LOWEST_PITCH
    counts = np.zeros((frames + 1, N_KEYS), dtype=np.int32)
    np.add.at(counts, (first, keys), 1)
    np.add.at(counts, (last, keys), -1)
    return (np.cumsum(counts[:-1], axis=0) > 0).astype(np.uint8)
