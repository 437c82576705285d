"""Piano roll <-> MIDI: held-note merging, round trips, tempo changes, refusal of bad files."""

from __future__ import annotations

import io

import mido
import numpy as np
import pretty_midi
import pytest

from lapmusic.core.errors import DataError
from lapmusic.data.midi import (
    fold_pitch,
    midi_to_bytes,
    midi_to_roll,
    roll_to_midi,
    roll_to_midi_bytes,
    roll_to_notes,
)
from lapmusic.data.midifile import MidiLimits, read_midi


def test_consecutive_frames_merge_into_one_held_note():
    roll = np.zeros((6, 88), dtype=np.uint8)
    roll[1:4, 39] = 1  # middle C (60) held for three frames
    roll[5, 39] = 1  # struck again after a silent frame
    roll[0:2, 0] = 1  # A0
    assert roll_to_notes(roll) == [(21, 0, 2), (60, 1, 4), (60, 5, 6)]
    midi = roll_to_midi(roll, step_seconds=0.5, program=40, velocity=70)
    (instrument,) = midi.instruments
    assert instrument.program == 40
    got = sorted((n.pitch, n.start, n.end, n.velocity) for n in instrument.notes)
    assert got == [(21, 0.0, 1.0, 70), (60, 0.5, 2.0, 70), (60, 2.5, 3.0, 70)]


@pytest.mark.parametrize("grid", [{"step_seconds": 0.2}, {"step_seconds": 0.25}, {"steps_per_beat": 4}])
def test_round_trip_is_identity_for_held_notes(make_rolls, grid):
    for roll in make_rolls(5, (10, 80), seed=3):
        roll[-1, 10] = 1  # a note sounding in the last frame, so no trailing silence is cut off
        if "steps_per_beat" in grid:  # four frames to a quarter note, so the beat grid is the frame grid
            data = roll_to_midi_bytes(roll, step_seconds=0.25, frames_per_beat=4)
        else:
            data = roll_to_midi_bytes(roll, step_seconds=grid["step_seconds"])
        back = midi_to_roll(data, **grid)
        np.testing.assert_array_equal(back, roll)


def test_written_midi_parses_with_mido_and_holds_the_notes(make_rolls):
    roll = make_rolls(1, 40, seed=1)[0]
    data = roll_to_midi_bytes(roll)
    parsed = mido.MidiFile(file=io.BytesIO(data))
    note_ons = [m for track in parsed.tracks for m in track if m.type == "note_on" and m.velocity > 0]
    assert len(note_ons) == len(roll_to_notes(roll))


def test_split_puts_primer_and_continuation_on_two_tracks():
    roll = np.zeros((8, 88), dtype=np.uint8)
    roll[2:6, 40] = 1  # held across the split at frame 4
    roll[0, 50] = 1
    roll[7, 60] = 1
    midi = roll_to_midi(roll, split_at=4, step_seconds=1.0, primer_program=19)
    primer, continuation = midi.instruments
    assert (primer.name, continuation.name) == ("primer", "continuation")
    assert primer.program == 19 and continuation.program == 0
    assert sorted((n.pitch, n.start, n.end) for n in primer.notes) == [(61, 2.0, 4.0), (71, 0.0, 1.0)]
    assert sorted((n.pitch, n.start, n.end) for n in continuation.notes) == [(61, 4.0, 6.0), (81, 7.0, 8.0)]


def _midi_with_tempo_change() -> bytes:
    """Four quarter-note beats at 120 bpm, then four at 60 bpm; a note on every beat."""
    file = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    file.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=500_000, time=0))
    for beat in range(8):
        if beat == 4:
            track.append(mido.MetaMessage("set_tempo", tempo=1_000_000, time=0))
        track.append(mido.Message("note_on", note=60 + beat, velocity=80, time=0))
        track.append(mido.Message("note_off", note=60 + beat, velocity=0, time=480))
    buffer = io.BytesIO()
    file.save(file=buffer)
    return buffer.getvalue()


def test_steps_per_beat_follows_tempo_changes():
    data = _midi_with_tempo_change()
    by_beat = midi_to_roll(data, steps_per_beat=1)
    assert by_beat.shape[0] == 8
    np.testing.assert_array_equal(by_beat.argmax(axis=1), np.arange(8) + 60 - 21)
    assert (by_beat.sum(axis=1) == 1).all()
    # On a seconds grid the slow half takes twice as many frames: 4 x 0.5 s + 4 x 1 s = 6 s.
    by_time = midi_to_roll(data, step_seconds=0.5)
    assert by_time.shape[0] == 12


def test_drums_are_dropped_and_out_of_range_pitches_folded_or_dropped():
    midi = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(0)
    piano.notes.append(pretty_midi.Note(80, 15, 0.0, 1.0))  # below A0: folds to 27
    piano.notes.append(pretty_midi.Note(80, 120, 0.0, 1.0))  # above C8: folds to 108
    piano.notes.append(pretty_midi.Note(80, 60, 0.0, 1.0))
    drums = pretty_midi.Instrument(0, is_drum=True)
    drums.notes.append(pretty_midi.Note(80, 36, 0.0, 1.0))
    midi.instruments += [piano, drums]
    folded = midi_to_roll(midi, step_seconds=0.5)
    assert sorted(21 + np.flatnonzero(folded[0])) == [27, 60, 108]
    dropped = midi_to_roll(midi, step_seconds=0.5, out_of_range="drop")
    assert sorted(21 + np.flatnonzero(dropped[0])) == [60]
    with_drums = midi_to_roll(midi, step_seconds=0.5, drop_drums=False)
    assert 36 in 21 + np.flatnonzero(with_drums[0])
    assert fold_pitch(20) == 32 and fold_pitch(109) == 97


def test_short_notes_keep_at_least_one_frame():
    midi = pretty_midi.PrettyMIDI()
    instrument = pretty_midi.Instrument(0)
    instrument.notes.append(pretty_midi.Note(80, 64, 0.0, 0.05))
    midi.instruments.append(instrument)
    roll = midi_to_roll(midi, step_seconds=0.25)
    assert roll[0, 64 - 21] == 1


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"RIFF....WAVEfmt ", "not a MIDI file"),
        (b"MThd\x00\x00\x00\x06\x00\x01\x00\x05\x01\xe0MTrk\xff\xff\xff\xffgarbage", "corrupt"),
        (b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\x00\x00\x01\x00\x00\x90\x3c", "truncated"),
    ],
)
def test_bad_midi_is_refused_by_name(data, reason):
    with pytest.raises(DataError, match=rf"song\.mid: .*{reason}"):
        read_midi(("song.mid", data))


def test_too_large_midi_is_refused(tmp_path):
    path = tmp_path / "huge.mid"
    path.write_bytes(b"MThd" + b"\x00" * 2000)
    with pytest.raises(DataError, match="huge.mid: too large"):
        read_midi(path, MidiLimits(max_bytes=1000))


def test_bad_rolls_and_settings_are_refused():
    with pytest.raises(DataError, match=r"shape \(T, 88\)"):
        roll_to_midi(np.zeros((4, 87), dtype=np.uint8))
    with pytest.raises(DataError, match="only 0 and 1"):
        roll_to_midi(np.full((4, 88), 2, dtype=np.uint8))
    with pytest.raises(DataError, match="step_seconds"):
        roll_to_midi(np.zeros((4, 88), dtype=np.uint8), step_seconds=0)
    with pytest.raises(DataError, match="exactly one time step"):
        midi_to_roll(roll_to_midi_bytes(np.ones((2, 88), dtype=np.uint8)))


def test_empty_roll_gives_a_valid_file_without_notes():
    midi = roll_to_midi(np.zeros((16, 88), dtype=np.uint8))
    parsed = pretty_midi.PrettyMIDI(io.BytesIO(midi_to_bytes(midi)))
    assert sum(len(i.notes) for i in parsed.instruments) == 0
    assert midi_to_roll(midi, step_seconds=0.25).shape == (0, 88)


# ------------------------------------------------------------------------------ export tempo
@pytest.mark.parametrize("step, frames_per_beat, bpm", [(0.5, 1, 120.0), (0.25, 2, 120.0), (0.125, 4, 120.0),
                                                         (0.2, 2, 150.0), (1.0, 1, 60.0)])
def test_exported_tempo_matches_the_frame_length(step, frames_per_beat, bpm):
    """Bach/JSB frames are quarter notes of 0.5 s: 120 bpm, one frame a beat (it used to say 30 bpm)."""
    from lapmusic.data.midi import frames_per_beat_for

    assert frames_per_beat_for(step) == frames_per_beat
    roll = np.zeros((8, 88), dtype=np.uint8)
    roll[2:4, 40] = 1
    parsed = pretty_midi.PrettyMIDI(io.BytesIO(roll_to_midi_bytes(roll, step_seconds=step)))
    (tempo,) = parsed.get_tempo_changes()[1]
    assert tempo == pytest.approx(bpm, rel=1e-4)
    (note,) = parsed.instruments[0].notes
    assert (note.start, note.end) == pytest.approx((2 * step, 4 * step), abs=1e-3)  # the speed is unchanged
    # One frame = frames_per_beat-th of a quarter note, in ticks, so notation software counts it right.
    assert parsed.time_to_tick(step) == parsed.resolution // frames_per_beat


def test_bach_samples_are_exported_at_120_bpm():
    from lapmusic.sampling.sample import suggested_step_seconds

    step = suggested_step_seconds("bach")
    tempo = pretty_midi.PrettyMIDI(io.BytesIO(roll_to_midi_bytes(np.eye(88, dtype=np.uint8)[:4], step_seconds=step)))
    assert tempo.get_tempo_changes()[1][0] == pytest.approx(120.0, rel=1e-4)


# ------------------------------------------------------------------------------ our scanner against pretty_midi
def _reference_notes(data: bytes) -> list[tuple[float, float, int, bool]]:
    midi = pretty_midi.PrettyMIDI(io.BytesIO(data))
    return sorted((round(n.start, 4), round(n.end, 4), n.pitch, i.is_drum) for i in midi.instruments for n in i.notes)


def test_scanner_reads_the_notes_pretty_midi_reads():
    """A format-1 file with tempo changes, running status, sysex, a re-struck key, overlapping notes, a drum
    channel, notes never closed and a zero-length note: the same notes, at the same times, as pretty_midi."""
    from lapmusic.data.midifile import read_midi

    rng = np.random.default_rng(7)
    file = mido.MidiFile(type=1, ticks_per_beat=96)
    conductor = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500_000, time=0),
                                mido.MetaMessage("set_tempo", tempo=300_000, time=400),
                                mido.MetaMessage("set_tempo", tempo=900_000, time=250)])
    file.tracks.append(conductor)
    for channel in (0, 9, 3):
        track = mido.MidiTrack([mido.Message("sysex", data=[1, 2, 3], time=0)])
        events = []
        for _ in range(60):
            start = int(rng.integers(0, 1500))
            pitch = int(rng.integers(30, 90))
            events.append((start, "note_on", pitch))
            events.append((start + int(rng.integers(0, 120)), "note_off", pitch))
        events.append((5, "note_on", 44))  # never closed
        events.sort(key=lambda e: (e[0], e[1] == "note_on"))
        now = 0
        for tick, kind, pitch in events:
            velocity = 70 if kind == "note_on" else 0
            if kind == "note_off" and rng.random() < 0.5:
                kind = "note_on"  # note-on with velocity 0, as many files write note-offs
            track.append(mido.Message(kind, channel=channel, note=pitch, velocity=velocity, time=tick - now))
            now = tick
        file.tracks.append(track)
    buffer = io.BytesIO()
    file.save(file=buffer)
    data = buffer.getvalue()
    notes = read_midi(("mix.mid", data))
    ours = sorted((round(float(a), 4), round(float(b), 4), int(p), bool(d))
                  for a, b, p, d in zip(notes.seconds(notes.start), notes.seconds(notes.end), notes.pitch, notes.drum))
    assert ours == _reference_notes(data)
    assert len(ours) > 150 and any(d for *_, d in ours)


@pytest.mark.parametrize(
    "header, reason",
    [
        (b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\xe7\x28", "SMPTE time code"),
        (b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x00", "0 ticks per beat"),
        (b"MThd\x00\x00\x00\x06\x00\x07\x00\x01\x01\xe0", "unknown format 7"),
    ],
)
def test_unusual_headers_are_refused_by_name(header, reason):
    from lapmusic.data.midifile import read_midi

    with pytest.raises(DataError, match=f"odd.mid: .*{reason}"):
        read_midi(("odd.mid", header + b"MTrk\x00\x00\x00\x04\x00\xff\x2f\x00"))


def test_running_status_without_a_status_byte_is_corrupt():
    from lapmusic.data.midifile import read_midi

    with pytest.raises(DataError, match=r"bad.mid: corrupt MIDI file \(track 1: data byte 0x3c .*without a status"):
        read_midi(("bad.mid", b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0MTrk\x00\x00\x00\x03\x00\x3c\x40"))
