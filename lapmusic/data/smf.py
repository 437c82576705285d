"""The Standard MIDI File format, scanned once into what a piano roll needs (:class:`MidiNotes`).

Format: ``MThd`` header (format 0, 1 or 2; ticks per quarter note; SMPTE time code is refused), then chunks;
``MTrk`` chunks hold events of a variable-length delta time and a status byte (running status allowed),
channel messages of 1-2 data bytes, meta events ``FF type length data`` (``51``: tempo in microseconds per
quarter note, ``58``: time signature, ``2F``: end of track) and system-exclusive events ``F0``/``F7 length data``. Other chunks are
skipped, as the standard says. Variable-length numbers longer than the standard's 4 bytes are refused.

Not ``mido`` (which ``pretty_midi`` reads with): its reader accepts variable-length numbers of any length,
decoding one costs time quadratic in its length, and it builds a Python object per event, so no byte
limit would bound the time and memory a hostile file costs.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np

from lapmusic.core.errors import DataError


@dataclass
class MidiNotes:
    """The notes of a MIDI file in ticks, and its tempo map.

    The tempo map is piecewise constant: from tick ``tempo_ticks[i]`` on, a quarter note
    (``ticks_per_beat`` ticks) lasts ``tempo_us[i]`` microseconds; ``tempo_ticks[0] == 0`` (120 bpm until
    the file's first tempo event).

    Attributes
    ----------
    name : str
        The file's name, for messages.
    ticks_per_beat : int
        Ticks per quarter note (the header's division).
    start, end : ndarray of shape (n_notes,), int64
        Each note's first tick and the tick it ends on (``end > start``).
    pitch : ndarray of shape (n_notes,), int16
        MIDI pitches 0..127.
    drum : ndarray of shape (n_notes,), bool
        True for notes on channel 10 (General MIDI percussion).
    tempo_ticks : ndarray of shape (n_changes,), int64
        Ticks at which the tempo changes, increasing, starting at 0.
    tempo_us : ndarray of shape (n_changes,), int64
        Microseconds per quarter note from each change on.
    time_signature : tuple of (int, int) or None
        The first time signature of the first track (``(3, 4)`` for 3/4), None when it has none.
    """

    name: str
    ticks_per_beat: int
    start: np.ndarray
    end: np.ndarray
    pitch: np.ndarray
    drum: np.ndarray
    tempo_ticks: np.ndarray
    tempo_us: np.ndarray
    time_signature: tuple[int, int] | None = None

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


DEFAULT_MAX_EVENTS = 500_000
"""Default of ``MidiLimits.max_events``: 1.25 times the events of the most notes a file may hold (200,000 note-ons
and their note-offs), and tens of times those of a real piece; a refused flood costs about half a second."""


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


def _scan_track(data: bytes, pos: int, end: int, track: int, max_notes: int, notes: list,
                tempos: tuple[array, array], counted: list, meters: list, budget: int, max_events: int) -> int:
    """Scan one ``MTrk`` chunk ``data[pos:end]``; append ``(start, end, pitch, drum)`` to ``notes`` and each
    tempo change's tick and microseconds per quarter to ``tempos``. ``counted[0]`` counts the file's note-ons;
    ``meters`` receives the track's first valid time signature ``(numerator, denominator)``. At most ``budget``
    events are scanned (the file's limit ``max_events`` less the events of earlier tracks); returns the number
    of events scanned.

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
    left = budget
    while pos < end:
        left -= 1
        if left < 0:
            _too_many_events(max_events)
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
                if counted[0] > max_notes:
                    raise _Refused(
                        f"too many notes: more than {max_notes:,} (the limit, LAPMUSIC_MAX_MIDI_NOTES); "
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
                    tempos[0].append(tick)
                    tempos[1].append((data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2])
                elif meta == 0x58 and size >= 2 and track == 1 and not meters:
                    if 1 <= data[pos] and data[pos + 1] <= 6:  # denominators 1..64: anything else is noise
                        meters.append((data[pos], 2 ** data[pos + 1]))
                elif meta == 0x2F:
                    return budget - left  # end of track; bytes after it are ignored, as mido does
            pos += size
            continue
        if kind not in _SYSTEM_LENGTHS:
            _refuse_corrupt(f"{where}: unknown status byte 0x{kind:02x} at byte {pos - 1}")
        pos += _SYSTEM_LENGTHS[kind]
    # Notes still open at the end of the track have no end: dropped, as pretty_midi does.
    return budget - left


def _too_many_events(limit: int):
    # Before this, a file of 8 MB of tempo changes cost over a second and a 1.2 M-entry tempo map.
    raise _Refused(
        f"too many events: more than {limit:,} in all (the limit, LAPMUSIC_MAX_MIDI_EVENTS); a piece of "
        "music holds far fewer: is it generated? Split the file into shorter pieces, or raise the limit"
    )


def scan_smf(name: str, data: bytes, *, max_notes: int, max_bytes: int,
             max_events: int = DEFAULT_MAX_EVENTS) -> MidiNotes:
    """The notes and tempo map of the Standard MIDI File ``data``.

    Parameters
    ----------
    name : str
        The file's name; every error message starts with it.
    data : bytes
        The whole file, starting with ``MThd``.
    max_notes : int
        Most note-ons accepted; the scan stops at the first one over.
    max_bytes : int
        Largest file accepted: a chunk claiming more is corrupt rather than truncated.
    max_events : int, default=DEFAULT_MAX_EVENTS
        Most events (notes, controllers, tempo changes, meta and system events) in all tracks together;
        the scan stops at the first one over, so a refused file costs at most this many events' time.

    Returns
    -------
    notes : MidiNotes

    Raises
    ------
    DataError
        If the file is truncated, corrupt, timed in SMPTE frames or holds more than ``max_notes`` notes or
        ``max_events`` events.
    """
    try:
        return _scan(name, data, max_notes, max_bytes, max_events)
    except _Refused as exc:
        raise DataError(f"{name}: {exc}") from None


def _scan(name: str, data: bytes, max_notes: int, max_bytes: int, max_events: int) -> MidiNotes:
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
    tempos = (array("q"), array("q"))  # 16 bytes a change: a file may hold a million of them
    counted = [0]
    meters: list = []  # the first track's first time signature, once found
    events = 0
    pos = 8 + header_size
    found = 0
    while pos + 8 <= len(data):
        kind, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "big")
        pos += 8
        if pos + size > len(data):
            if size > max_bytes:
                _refuse_corrupt(f"chunk {found + 1} claims {size:,} bytes, more than a MIDI file holds")
            _refuse_truncated(
                f"track {found + 1} declares {size:,} bytes but only {len(data) - pos:,} remain"
            )
        if kind == b"MTrk":
            found += 1
            events += _scan_track(data, pos, pos + size, found, max_notes, notes, tempos, counted, meters,
                                  max_events - events, max_events)
        pos += size  # other chunk types are skipped, as the standard says
    if found < n_tracks:
        _refuse_truncated(f"the header announces {n_tracks} tracks, the file holds {found}")
    # Sorted stably and prefixed with the default 120 bpm, so that of changes on one tick the last one wins.
    order = np.argsort(np.frombuffer(tempos[0], dtype=np.int64), kind="stable")
    ticks = np.concatenate(([0], np.frombuffer(tempos[0], dtype=np.int64)[order]))
    us = np.concatenate(([500_000], np.frombuffer(tempos[1], dtype=np.int64)[order]))
    last_on_its_tick = np.append(ticks[1:] != ticks[:-1], True)
    table = np.array(notes, dtype=np.int64).reshape(-1, 4)
    return MidiNotes(
        name=name, ticks_per_beat=division, start=table[:, 0], end=table[:, 1],
        pitch=table[:, 2].astype(np.int16), drum=table[:, 3].astype(bool),
        tempo_ticks=ticks[last_on_its_tick], tempo_us=us[last_on_its_tick],
        time_signature=meters[0] if meters else None,
    )
