"""Reading MIDI files from untrusted sources, with every cost bounded before it is paid.

:func:`read_midi` checks a file's size before reading it, then scans it once (:mod:`lapmusic.data.smf`)
into what a piano roll needs: each note's start and end tick, pitch and whether it is a drum, and the
tempo map (:class:`~lapmusic.data.smf.MidiNotes`). The notes are counted while scanning (the scan stops at
the first note over :class:`MidiLimits`' ``max_notes``), and truncated or corrupt files are refused by name
with what is wrong. The piano roll's limits (seconds, frames) are checked by
:func:`lapmusic.data.midi.midi_to_roll` from these notes, before it allocates the roll.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from lapmusic.core.errors import DataError
from lapmusic.data.smf import DEFAULT_MAX_EVENTS, MidiNotes, scan_smf

MAX_MIDI_BYTES = 8 * 1024 * 1024
"""Default of ``MidiLimits.max_bytes``: real MIDI files are kilobytes, anything larger is refused unread."""

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
    """A positive limit from the environment variable ``variable``.

    Parameters
    ----------
    variable : str
        Name of the environment variable.
    default : int or float
        The limit when the variable is unset or blank.
    kind : type, default=int
        ``int`` (a value such as ``"2e5"`` is accepted and truncated) or ``float``.

    Returns
    -------
    limit : int or float

    Raises
    ------
    DataError
        If the value is not a positive finite number.
    """
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
    ``max_events``             ``LAPMUSIC_MAX_MIDI_EVENTS``   500,000 events per file (all kinds)
    ========================== ============================== ==========================================

    Attributes
    ----------
    max_bytes : int
        Largest file, in bytes; checked before the file is read (from the file system for a path).
    max_seconds : float
        Latest end of the last note, in seconds, under the file's tempo map.
    max_notes : int
        Most note-ons per file; the scan stops at the first one over.
    max_frames : int
        Most frames of the piano roll made from the file.
    max_events : int
        Most events of all kinds per file (tempo changes, controllers, notes...); the scan stops at the first
        one over, so refusing a flood of events costs at most this many events' time.
    """

    max_bytes: int = MAX_MIDI_BYTES
    max_seconds: float = 1200.0
    max_notes: int = 200_000
    max_frames: int = 20_000
    max_events: int = DEFAULT_MAX_EVENTS

    @classmethod
    def from_env(cls, **overrides) -> "MidiLimits":
        """The limits from the environment variables above (defaults where unset).

        Parameters
        ----------
        **overrides
            Field values that replace the environment's; ``None`` values are ignored.

        Returns
        -------
        limits : MidiLimits

        Raises
        ------
        DataError
            If a variable is set to something other than a positive number.
        """
        values = {
            "max_bytes": env_limit("LAPMUSIC_MAX_MIDI_BYTES", cls.max_bytes),
            "max_seconds": env_limit("LAPMUSIC_MAX_MIDI_SECONDS", cls.max_seconds, float),
            "max_notes": env_limit("LAPMUSIC_MAX_MIDI_NOTES", cls.max_notes),
            "max_frames": env_limit("LAPMUSIC_MAX_MIDI_FRAMES", cls.max_frames),
            "max_events": env_limit("LAPMUSIC_MAX_MIDI_EVENTS", cls.max_events),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


# ------------------------------------------------------------------------------ files
def read_midi_bytes(source: FileSource, max_bytes: int = MAX_MIDI_BYTES) -> tuple[str, bytes]:
    """The name and bytes of a file, its size checked first.

    Parameters
    ----------
    source : str, os.PathLike, bytes or tuple of (str, bytes)
        A path (a regular file, its size taken from the file system before it is opened; at most
        ``max_bytes + 1`` bytes are read whatever that size says), raw bytes (named
        ``"<bytes>"``) or a ``(name, bytes)`` pair such as an upload.
    max_bytes : int, default=MAX_MIDI_BYTES
        Largest size accepted.

    Returns
    -------
    name : str
    data : bytes

    Raises
    ------
    DataError
        If the file cannot be read, is not a regular file (a device, FIFO or socket), is empty or is larger
        than ``max_bytes``.
    """
    if isinstance(source, tuple):
        name, data = source
    elif isinstance(source, (bytes, bytearray)):
        name, data = "<bytes>", bytes(source)
    else:
        path = Path(source)
        name = path.name
        try:
            _check_regular(name, path.stat(), max_bytes)  # before opening: a FIFO would block, a device never end
            # O_NONBLOCK: should the path become a FIFO after the check, opening it does not wait for a writer.
            with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as handle:
                _check_regular(name, os.fstat(handle.fileno()), max_bytes)
                data = handle.read(max_bytes + 1)  # bounded, whatever the file system said about its size
        except OSError as exc:
            raise DataError(f"{name}: cannot read the file ({exc.strerror or exc})") from None
    if len(data) == 0:
        raise DataError(f"{name}: the file is empty")
    if len(data) > max_bytes:
        _too_large(name, len(data), max_bytes)
    return name, bytes(data)


def _check_regular(name: str, info: os.stat_result, max_bytes: int) -> None:
    """Refuse what is not a regular file (a device such as /dev/zero, a FIFO, a socket) or is over ``max_bytes``."""
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"{name}: not a regular file (a device, pipe or socket cannot be a MIDI file); "
                        "give the path of a .mid file")
    if info.st_size > max_bytes:
        _too_large(name, info.st_size, max_bytes)


def _too_large(name: str, size: int, max_bytes: int):
    raise DataError(
        f"{name}: too large ({megabytes(size)}, {size:,} bytes; the limit is {megabytes(max_bytes)} per file, "
        "LAPMUSIC_MAX_MIDI_BYTES); real MIDI files are kilobytes: is it a MIDI file? Split it, or raise the limit"
    )


def read_midi(source: FileSource, limits: MidiLimits | None = None) -> MidiNotes:
    """Scan a MIDI file into its notes and tempo map.

    Cost: one pass over at most ``limits.max_bytes`` bytes; memory: the notes (at most ``max_notes``)
    and the tempo changes.

    Parameters
    ----------
    source : str, os.PathLike, bytes or tuple of (str, bytes)
        A path, raw bytes, or a ``(name, bytes)`` pair; the name starts every error message.
    limits : MidiLimits, optional
        Bytes and notes allowed; default :meth:`MidiLimits.from_env`.

    Returns
    -------
    notes : MidiNotes
        Every note with an end (notes never released are dropped, as ``pretty_midi`` does).

    Raises
    ------
    DataError
        If the file is empty, too large, not a MIDI file, truncated, corrupt, timed in SMPTE frames or
        holds more than ``limits.max_notes`` notes or ``limits.max_events`` events; the message names the file, what is wrong and what to do.
    """
    limits = limits or MidiLimits.from_env()
    name, data = read_midi_bytes(source, limits.max_bytes)
    if not data.startswith(b"MThd"):
        # Catch the common case (a WAV, MP3, text...) with a plain message.
        raise DataError(f"{name}: not a MIDI file (it does not start with the 'MThd' header)")
    return scan_smf(name, data, max_notes=limits.max_notes, max_bytes=limits.max_bytes,
                    max_events=limits.max_events)
