"""Render a MIDI sample to a WAV you can play.

The preferred renderer is FluidSynth (through ``pyfluidsynth`` and the system ``libfluidsynth``) with a
General MIDI soundfont: ``fluid-soundfont-gm`` (FluidR3_GM) when installed, else the small soundfont that
ships with ``pretty_midi``. When FluidSynth cannot be used, audio falls back to ``pretty_midi``'s own
sine-wave synthesis and says so once. We check for the library ourselves because pretty_midi reports a
missing ``libfluidsynth`` as "pyfluidsynth is not installed", which sends people to the wrong fix.

FluidSynth is driven here rather than through ``PrettyMIDI.fluidsynth``, which keeps only the left channel of
FluidSynth's stereo output: here every instrument plays on its own channel and both outputs are mixed.

A MIDI file without notes renders to a valid WAV of silence with ``silent=True`` (never NaN samples:
pretty_midi normalises by the peak, which is 0 for silence).
"""

from __future__ import annotations

import importlib
import io
import os
import threading
import warnings
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pretty_midi

from lapmusic.core.errors import LapMusicError
from lapmusic.core.io import atomic_write_bytes

SAMPLE_RATES = (22050, 44100)
"""The rates offered in the CLI and the app; any rate in [8000, 96000] Hz is accepted."""

SOUNDFONT_ENV = "LAPMUSIC_SOUNDFONT"
"""Environment variable naming a .sf2 file to use instead of the search below."""

SYSTEM_SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",  # Debian / Ubuntu: fluid-soundfont-gm
    "/usr/share/soundfonts/FluidR3_GM.sf2",  # Fedora, Arch
    "/usr/share/soundfonts/FluidR3_GM2-2.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/opt/homebrew/share/soundfonts/default.sf2",
    "/usr/local/share/soundfonts/default.sf2",
)

PEAK = 0.89  # normalise the loudest sample to about -1 dBFS
TAIL_SECONDS = 1.0  # let the last notes' release and the reverb ring out
MIN_SILENT_SECONDS = 1.0

_GAIN = 0.3  # FluidSynth master gain: low enough that dense chords do not clip before we normalise
_render_lock = threading.Lock()  # one render at a time (the app renders from threads)
_soundfont_keepers: dict = {}  # realpath of a .sf2 -> a Synth that keeps it loaded (see _new_synth)
_fallback_warned = False


@dataclass
class AudioResult:
    """A rendered WAV (16-bit PCM mono) and how it was made.

    Attributes
    ----------
    wav : bytes
        The whole ``.wav`` file.
    sample_rate : int
        Samples per second.
    renderer : {"fluidsynth", "pretty_midi"}
        FluidSynth with a soundfont, or pretty_midi's sine-wave fallback.
    silent : bool
        True when there was nothing to hear (no notes).
    warning : str or None
        Why the preferred renderer was not used, if it was not.
    soundfont : str or None
        The ``.sf2`` file FluidSynth used.
    """

    wav: bytes
    sample_rate: int
    renderer: str
    silent: bool
    warning: str | None = None
    soundfont: str | None = None

    @property
    def seconds(self) -> float:
        """Duration of the audio."""
        return (len(self.wav) - 44) / (2 * self.sample_rate)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the WAV atomically to ``path``."""
        return atomic_write_bytes(path, self.wav)


# ------------------------------------------------------------------------------------ availability
def _import_fluidsynth():
    """Import pyfluidsynth; it raises ImportError when libfluidsynth itself cannot be found."""
    return importlib.import_module("fluidsynth")


def fluidsynth_problem() -> str | None:
    """``None`` when FluidSynth can be used, else a sentence saying what is missing and how to fix it."""
    try:
        module = _import_fluidsynth()
    except ModuleNotFoundError as exc:
        if exc.name == "fluidsynth":
            return "the Python package pyfluidsynth is not installed (pip install pyfluidsynth)"
        return _missing_library_message(exc)
    except (ImportError, OSError) as exc:  # pyfluidsynth is there but libfluidsynth is not (or is broken)
        return _missing_library_message(exc)
    if not hasattr(module, "Synth"):
        return "the installed 'fluidsynth' module is not pyfluidsynth (pip install pyfluidsynth)"
    return None


def _missing_library_message(exc: BaseException) -> str:
    return (
        "the FluidSynth library (libfluidsynth) was not found, although pyfluidsynth is installed "
        f"({exc}); install it with 'apt install libfluidsynth3' (Debian/Ubuntu), "
        "'dnf install fluidsynth-libs' (Fedora) or 'brew install fluid-synth' (macOS)"
    )


def fluidsynth_available() -> bool:
    """True when pyfluidsynth imports and finds the FluidSynth library."""
    return fluidsynth_problem() is None


def find_soundfont() -> str | None:
    """Path of a General MIDI soundfont: $LAPMUSIC_SOUNDFONT, then FluidR3_GM, then pretty_midi's own."""
    candidates = []
    if os.environ.get(SOUNDFONT_ENV):
        candidates.append(os.environ[SOUNDFONT_ENV])
    candidates.extend(SYSTEM_SOUNDFONTS)
    candidates.append(str(Path(pretty_midi.__file__).with_name("TimGM6mb.sf2")))
    for path in candidates:
        if os.path.isfile(path):
            return path
    return None


# ------------------------------------------------------------------------------------ rendering
def render_wav(
    pm: pretty_midi.PrettyMIDI,
    sample_rate: int = 22050,
    soundfont: str | os.PathLike | None = None,
    *,
    min_seconds: float = 0.0,
) -> AudioResult:
    """Render MIDI to a WAV file (16-bit PCM, mono), its loudest sample at about -1 dBFS.

    Uses FluidSynth with a General MIDI soundfont; falls back to pretty_midi's sine-wave synthesis, with a
    one-time ``RuntimeWarning``, when FluidSynth or a soundfont is unavailable. One render runs at a time
    (the app renders from threads). The sound lasts until the last note ends plus ``TAIL_SECONDS`` for the
    release to ring out; without notes the WAV is silence.

    Parameters
    ----------
    pm : pretty_midi.PrettyMIDI
        The music, e.g. from :func:`lapmusic.data.midi.roll_to_midi`.
    sample_rate : int, default=22050
        Samples per second, 8000..96000 (the CLI and the app offer 22050 and 44100).
    soundfont : str or os.PathLike, optional
        A ``.sf2`` file; default :func:`find_soundfont`.
    min_seconds : float, default=0.0
        Shortest duration of the WAV: pass the roll's duration so trailing silence is kept.

    Returns
    -------
    result : AudioResult
        The WAV bytes, the renderer used and why, if it is not FluidSynth.

    Raises
    ------
    LapMusicError
        If ``sample_rate`` is not a whole number of Hz in range, ``soundfont`` does not exist, or FluidSynth
        cannot load it.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise LapMusicError(f"sample_rate must be a whole number of Hz (22050 or 44100), got {sample_rate!r}")
    sample_rate = int(sample_rate)
    if not 8000 <= sample_rate <= 96000:
        raise LapMusicError(f"sample_rate must be between 8000 and 96000 Hz (e.g. 22050 or 44100), got {sample_rate}")
    if soundfont is not None and not os.path.isfile(soundfont):
        raise LapMusicError(f"soundfont {soundfont} does not exist; give the path of a .sf2 file")

    warning = fluidsynth_problem()
    sf2 = str(soundfont) if soundfont is not None else find_soundfont()
    if warning is None and sf2 is None:
        warning = "no General MIDI soundfont was found (apt install fluid-soundfont-gm, or set $LAPMUSIC_SOUNDFONT)"
    renderer = "fluidsynth" if warning is None else "pretty_midi"
    if warning is not None:
        warning = f"FluidSynth is not available: {warning}. Using pretty_midi's simple sine-wave synthesis instead."
        _warn_once(warning)

    end = _end_time(pm)
    if not _has_notes(pm):
        samples = np.zeros(int(round(max(min_seconds, end, MIN_SILENT_SECONDS) * sample_rate)))
        return AudioResult(_wav_bytes(samples, sample_rate), sample_rate, renderer, True, warning,
                           sf2 if renderer == "fluidsynth" else None)

    if renderer == "fluidsynth":
        samples = _render_fluidsynth(pm, sample_rate, sf2)
    else:
        samples = _render_sine(pm, sample_rate)
    samples = np.nan_to_num(np.asarray(samples, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    target = int(round(min_seconds * sample_rate))
    if samples.shape[0] < target:
        samples = np.pad(samples, (0, target - samples.shape[0]))
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    silent = peak == 0.0
    if not silent:
        samples = samples * (PEAK / peak)
    return AudioResult(_wav_bytes(samples, sample_rate), sample_rate, renderer, silent, warning,
                       sf2 if renderer == "fluidsynth" else None)


def write_wav(pm: pretty_midi.PrettyMIDI, path: str | os.PathLike, **kwargs) -> AudioResult:
    """Render with :func:`render_wav` and write the WAV atomically to ``path``."""
    result = render_wav(pm, **kwargs)
    result.save(path)
    return result


def _warn_once(message: str) -> None:
    global _fallback_warned
    if not _fallback_warned:
        _fallback_warned = True
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _has_notes(pm: pretty_midi.PrettyMIDI) -> bool:
    return any(note.end > note.start for instrument in pm.instruments for note in instrument.notes)


def _end_time(pm: pretty_midi.PrettyMIDI) -> float:
    ends = [note.end for instrument in pm.instruments for note in instrument.notes]
    return max(ends) if ends else 0.0


def _render_sine(pm: pretty_midi.PrettyMIDI, sample_rate: int) -> np.ndarray:
    return pm.synthesize(fs=sample_rate, normalize=False)


def _new_synth(soundfont: str, sample_rate: int):
    """A fresh FluidSynth synthesizer with ``soundfont`` loaded, and the soundfont's id.

    A fresh synthesizer per render makes renders reproducible (a reused one keeps its block phase and
    voice state). Loading stays cheap because a "keeper" synthesizer holds each soundfont open, so
    FluidSynth's sample cache shares the samples already loaded instead of reading the file again.
    """
    fluidsynth = _import_fluidsynth()
    key = os.path.realpath(soundfont)
    if key not in _soundfont_keepers:
        keeper = fluidsynth.Synth(gain=_GAIN, samplerate=float(sample_rate), channels=16)
        if keeper.sfload(soundfont) < 0:
            keeper.delete()
            raise LapMusicError(f"FluidSynth could not load the soundfont {soundfont}; is it a valid .sf2 file?")
        _soundfont_keepers[key] = keeper
    synth = fluidsynth.Synth(gain=_GAIN, samplerate=float(sample_rate), channels=16)
    sfid = synth.sfload(soundfont)
    if sfid < 0:
        synth.delete()
        raise LapMusicError(f"FluidSynth could not load the soundfont {soundfont}; is it a valid .sf2 file?")
    return synth, sfid


def _render_fluidsynth(pm: pretty_midi.PrettyMIDI, sample_rate: int, soundfont: str) -> np.ndarray:
    """Play every instrument on its own MIDI channel through one synthesizer; return mono float samples."""
    with _render_lock:
        synth, sfid = _new_synth(soundfont, sample_rate)
        try:
            return _play(pm, synth, sfid, sample_rate)
        finally:
            synth.delete()


def _play(pm: pretty_midi.PrettyMIDI, synth, sfid: int, sample_rate: int) -> np.ndarray:
    """Send every note to ``synth`` (each instrument on its own channel) and return mono float samples."""
    events = []  # (time, order, kind, channel, a, b); note-offs sort before note-ons at the same time
    melodic_channels = [c for c in range(16) if c != 9]
    next_channel = 0
    for instrument in pm.instruments:
        if instrument.is_drum:
            channel = 9
            if synth.program_select(channel, sfid, 128, instrument.program) == -1:
                synth.program_select(channel, sfid, 128, 0)
        else:
            # More than 15 melodic instruments share channels round-robin (rare for our files).
            channel = melodic_channels[next_channel % len(melodic_channels)]
            next_channel += 1
            synth.program_select(channel, sfid, 0, instrument.program)
        for note in instrument.notes:
            if note.end <= note.start:
                continue
            events.append((note.start, 1, "on", channel, note.pitch, note.velocity))
            events.append((note.end, 0, "off", channel, note.pitch, 0))
    events.sort(key=lambda e: (e[0], e[1]))
    total = int(np.ceil((events[-1][0] + TAIL_SECONDS) * sample_rate))
    out = np.zeros(total, dtype=np.float64)
    cursor = 0
    for time, _, kind, channel, pitch, velocity in events:
        position = min(int(round(time * sample_rate)), total)
        if position > cursor:
            out[cursor:position] = _mono(synth.get_samples(position - cursor))
            cursor = position
        if kind == "on":
            synth.noteon(channel, pitch, velocity)
        else:
            synth.noteoff(channel, pitch)
    if total > cursor:
        out[cursor:] = _mono(synth.get_samples(total - cursor))
    return out


def _mono(interleaved: np.ndarray) -> np.ndarray:
    """FluidSynth's interleaved int16 stereo -> float mono."""
    stereo = np.asarray(interleaved, dtype=np.float64).reshape(-1, 2)
    return stereo.mean(axis=1)


def _wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """Float samples in [-1, 1] -> 16-bit PCM mono WAV bytes."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(sample_rate)
        handle.writeframes(pcm.tobytes())
    return buffer.getvalue()


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """WAV bytes (16-bit PCM) -> ``(samples in [-1, 1] as float, sample_rate)``; for tests and the app."""
    with wave.open(io.BytesIO(data), "rb") as handle:
        if handle.getsampwidth() != 2:
            raise LapMusicError("only 16-bit PCM WAV files are supported")
        frames = handle.readframes(handle.getnframes())
        channels = handle.getnchannels()
        rate = handle.getframerate()
    samples = np.frombuffer(frames, dtype="<i2").astype(np.float64) / 32767.0
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return samples, rate
