"""WAV rendering: FluidSynth when present, the pretty_midi fallback when it is not, silence, bad input."""

from __future__ import annotations

import ctypes.util
import sys
import warnings
from pathlib import Path

import numpy as np
import pretty_midi
import pytest

import lapmusic.sampling.audio as audio
from lapmusic.core.errors import LapMusicError
from lapmusic.data.midi import roll_to_midi
from lapmusic.sampling.audio import AudioResult, find_soundfont, fluidsynth_available, read_wav, render_wav

STEP = 0.25
PRETTY_MIDI_SF2 = str(Path(pretty_midi.__file__).with_name("TimGM6mb.sf2"))
needs_fluidsynth = pytest.mark.skipif(not fluidsynth_available(), reason="libfluidsynth is not installed")


def held_note_midi(pitch=69, frames=8, **kwargs):
    roll = np.zeros((frames, 88), dtype=np.uint8)
    roll[:, pitch - 21] = 1
    return roll_to_midi(roll, step_seconds=STEP, **kwargs)


def dominant_frequency(samples, sample_rate, start, end):
    segment = samples[int(start * sample_rate): int(end * sample_rate)]
    spectrum = np.abs(np.fft.rfft(segment * np.hanning(len(segment))))
    return np.fft.rfftfreq(len(segment), 1.0 / sample_rate)[spectrum.argmax()]


def rms(samples, sample_rate, start, end):
    segment = samples[int(start * sample_rate): int(end * sample_rate)]
    return float(np.sqrt(np.mean(segment**2)))


@pytest.fixture
def simulate_missing_libfluidsynth(monkeypatch):
    """Make ``import fluidsynth`` fail exactly as pyfluidsynth does when libfluidsynth is absent."""
    monkeypatch.delitem(sys.modules, "fluidsynth", raising=False)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    monkeypatch.delenv("HOMEBREW_PREFIX", raising=False)
    monkeypatch.setattr(audio, "_fallback_warned", False)


# --------------------------------------------------------------------------------------- FluidSynth
@needs_fluidsynth
@pytest.mark.parametrize("sample_rate", [22050, 44100])
@pytest.mark.parametrize("soundfont", [None, PRETTY_MIDI_SF2], ids=["default-soundfont", "pretty_midi-soundfont"])
def test_fluidsynth_renders_the_right_pitch_at_the_right_rate(sample_rate, soundfont):
    result = render_wav(held_note_midi(69), sample_rate, soundfont)  # A4 for 2 s
    assert isinstance(result, AudioResult)
    assert result.renderer == "fluidsynth" and result.warning is None and not result.silent
    samples, rate = read_wav(result.wav)
    assert rate == sample_rate == result.sample_rate
    assert np.isfinite(samples).all()
    assert abs(dominant_frequency(samples, rate, 0.2, 1.8) - 440.0) < 2.0
    # Two seconds of note plus a one-second tail in which the sound dies away.
    assert result.seconds == pytest.approx(2.0 + audio.TAIL_SECONDS, abs=1e-3)
    assert rms(samples, rate, 0.2, 1.8) > 50 * rms(samples, rate, 2.6, 3.0)
    assert np.abs(samples).max() == pytest.approx(audio.PEAK, abs=1e-3)


@needs_fluidsynth
def test_fluidsynth_render_is_reproducible_and_places_notes_in_time():
    roll = np.zeros((16, 88), dtype=np.uint8)
    roll[0:4, 60 - 21] = 1  # C4 for 1 s, then 1 s of silence, then G4 for 2 s
    roll[8:16, 67 - 21] = 1
    pm = roll_to_midi(roll, step_seconds=STEP, split_at=8)
    first = render_wav(pm, 22050)
    assert first.wav == render_wav(pm, 22050).wav
    samples, rate = read_wav(first.wav)
    assert abs(dominant_frequency(samples, rate, 0.1, 0.9) - 261.6) < 3.0
    assert abs(dominant_frequency(samples, rate, 2.2, 3.8) - 392.0) < 3.0
    assert rms(samples, rate, 0.1, 0.9) > 5 * rms(samples, rate, 1.7, 1.95)


def test_find_soundfont_prefers_env_then_system_then_pretty_midi(monkeypatch, tmp_path):
    custom = tmp_path / "mine.sf2"
    custom.write_bytes(b"RIFF")
    monkeypatch.setenv(audio.SOUNDFONT_ENV, str(custom))
    assert find_soundfont() == str(custom)
    monkeypatch.delenv(audio.SOUNDFONT_ENV)
    monkeypatch.setattr(audio, "SYSTEM_SOUNDFONTS", (str(tmp_path / "absent.sf2"),))
    assert find_soundfont() == PRETTY_MIDI_SF2


# --------------------------------------------------------------------------------------- fallback
def test_missing_library_is_detected_and_named(simulate_missing_libfluidsynth):
    problem = audio.fluidsynth_problem()
    assert problem is not None and "libfluidsynth" in problem and "apt install libfluidsynth3" in problem
    assert "pyfluidsynth is not installed" not in problem  # pretty_midi's misleading wording
    assert not fluidsynth_available()


def test_missing_python_package_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "fluidsynth", None)  # makes the import fail with ModuleNotFoundError
    assert "pip install pyfluidsynth" in audio.fluidsynth_problem()


def test_fallback_renders_with_pretty_midi_and_warns_once(simulate_missing_libfluidsynth):
    pm = held_note_midi(69)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = render_wav(pm, 22050)
        second = render_wav(pm, 44100)
    assert [str(w.message) for w in caught] == [first.warning]
    assert first.renderer == second.renderer == "pretty_midi"
    assert "libfluidsynth" in first.warning and second.warning == first.warning  # every result still says why
    for result, rate in ((first, 22050), (second, 44100)):
        samples, read_rate = read_wav(result.wav)
        assert read_rate == rate and not result.silent and np.isfinite(samples).all()
        assert abs(dominant_frequency(samples, rate, 0.2, 1.8) - 440.0) < 2.0


def test_fallback_when_no_soundfont_exists(monkeypatch, tmp_path):
    monkeypatch.setattr(audio, "find_soundfont", lambda: None)
    monkeypatch.setattr(audio, "_fallback_warned", True)  # keep the test output quiet
    result = render_wav(held_note_midi(60))
    assert result.renderer == "pretty_midi" and "soundfont" in result.warning and not result.silent


# --------------------------------------------------------------------------------------- silence
@pytest.mark.parametrize("missing", [False, True], ids=["fluidsynth-or-fallback", "fallback"])
def test_no_notes_gives_a_valid_silent_wav(missing, monkeypatch, request):
    if missing:
        request.getfixturevalue("simulate_missing_libfluidsynth")
        monkeypatch.setattr(audio, "_fallback_warned", True)
    pm = roll_to_midi(np.zeros((12, 88), dtype=np.uint8), step_seconds=STEP)
    result = render_wav(pm, 22050, min_seconds=3.0)
    assert result.silent
    samples, rate = read_wav(result.wav)
    assert rate == 22050 and len(samples) == 3 * 22050
    assert np.isfinite(samples).all() and not samples.any()
    empty = render_wav(pretty_midi.PrettyMIDI(), 44100)  # not even an instrument
    assert empty.silent and empty.seconds == pytest.approx(audio.MIN_SILENT_SECONDS)


def test_min_seconds_pads_trailing_silence():
    result = render_wav(held_note_midi(60, frames=2), 22050, min_seconds=5.0)
    assert result.seconds == pytest.approx(5.0, abs=1e-3)


def test_save_writes_the_wav(tmp_path):
    result = render_wav(held_note_midi(64))
    path = result.save(tmp_path / "out" / "sample.wav")
    assert path.read_bytes() == result.wav
    assert not list(path.parent.glob(".*.tmp"))
    written = audio.write_wav(held_note_midi(64), tmp_path / "again.wav", sample_rate=44100)
    assert read_wav((tmp_path / "again.wav").read_bytes())[1] == 44100 == written.sample_rate


# --------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("rate", [0, 4000, 200000, 22050.5, True])
def test_bad_sample_rate(rate):
    with pytest.raises(LapMusicError, match="sample_rate"):
        render_wav(held_note_midi(60), rate)


def test_missing_soundfont_file(tmp_path):
    with pytest.raises(LapMusicError, match="does not exist"):
        render_wav(held_note_midi(60), 22050, tmp_path / "nope.sf2")


@needs_fluidsynth
def test_corrupt_soundfont_file(tmp_path):
    bad = tmp_path / "bad.sf2"
    bad.write_bytes(b"this is not a soundfont")
    with pytest.raises(LapMusicError, match="could not load the soundfont"):
        render_wav(held_note_midi(60), 22050, bad)
