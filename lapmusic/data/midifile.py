"""Reading Standard MIDI Files from untrusted sources, with every cost bounded before it is paid.

:func:`read_midi` scans the bytes of a MIDI file once and keeps only what a piano roll needs: each note's
start and end tick, pitch and whether it is a drum, and the tempo map (:class:`MidiNotes`). It replaces
``pretty_midi``/``mido`` for reading because those build an object per event and a tick-to-time table sized by
the file's last tick, so a 52-byte file whose second note sits at tick 10,000,000 cost minutes of CPU and
gigabytes. Here the file's size is checked before it is read, the notes are counted while scanning (the
scan stops at the first note over :class:`MidiLimits`' ``max_notes``), and truncated or corrupt files are
refused by name with what is wrong. The piano roll's limits (seconds, frames) are checked by
:func:`lapmusic.midi.midi_to_roll` from these notes, before it allocates the roll.

Format: ``MThd`` header (format 0, 1 or 2; ticks per quarter note; SMPTE time code is refused), then chunks;
``MTrk`` chunks hold events of a variable-length delta time and a status byte (running status allowed),
channel messages of 1-2 data bytes, meta events ``FF type length data`` (``51``: tempo in microseconds per
quarter note, ``2F``: end of track) and system-exclusive events ``F0``/``F7 length data``. Other chunks are
skipped, as the standard says.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from lapmusic.core.errors import DataError

MAX_MIDI_BYTES = 8 * 1024 * 1024
"""Real MIDI files are kilobytes; anything larger than this is refused rather than parsed (default of
``MidiLimits.max_bytes``)."""

FileSource = Union[str, os.PathLike, bytes, "tuple[str, bytes]"]


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


def env_limit(variable: str, default, kind=int):
    """A positive limit from the environment (``default`` when unset); a bad value is a clear error."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = kind(float(text)) if kind is int else kind(text)
    except (ValueError, OverflowError):  # "abc", or int("inf")
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
            "max_bytes": env_limit("LAPMUSIC_MAX_MIDI_BYTES", cls.max_bytes),
            "max_seconds": env_limit("LAPMUSIC_MAX_MIDI_SECONDS", cls.max_seconds, float),
            "max_notes": env_limit("LAPMUSIC_MAX_MIDI_NOTES", cls.max_notes),
            "max_frames": env_limit("LAPMUSIC_MAX_MIDI_FRAMES", cls.max_frames),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


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


def read_midi_bytes(source: FileSource, max_bytes: int = MAX_MIDI_BYTES) -> tuple[str, bytes]:
    """``(name, bytes)`` of a path, raw bytes or ``(name, bytes)``; the size is checked (from the file
    system for a path, before reading it)."""
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


def read_midi(source: FileSource, limits: MidiLimits | None = None) -> MidiNotes:
    """Scan a MIDI file (a path, raw bytes or ``(name, bytes)``) into :class:`MidiNotes`, refusing by name what is not a
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
