"""Piano roll <-> MIDI: held-note merging, round trips, tempo changes, refusal of bad files."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

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
    from lapmusic.sampling.meter import suggested_step_seconds

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


# ------------------------------------------------------------------------------ recorded piano rolls
# What real and tempo-changing files read into, recorded (frames, sha256 of the uint8 roll), so that no
# change of reader can silently change what a user's file becomes.
MUSIC21_ROLLS = {  # path in music21: (sha256 of the file, steps_per_beat=4 roll, step_seconds=0.25 roll)
    "midi/testPrimitive/test01.mid": ("e2c57f1c29bc4c32", 32, "9d5436e5683c475a", 17, "bfba66cddd3097d3"),
    "midi/testPrimitive/test02.mid": ("1ba84019d3e1f9ed", 144, "a7c9e4fcbf69d453", 72, "25d2f955b721d326"),
    "midi/testPrimitive/test03.mid": ("1979fbbc7d3d3ce6", 1544, "89a2b8fcee244f87", 643, "88eaca93a394ab0f"),
    "midi/testPrimitive/test04.mid": ("ca133564cac25f19", 2234, "c6685f248f8cc331", 1117, "b857f83ff2687db6"),
    "midi/testPrimitive/test05.mid": ("bfedc6bf34906cb8", 58, "358b0fa5818d9749", 29, "040026de1db463f6"),
    "midi/testPrimitive/test06.mid": ("d54901c8f49c94cf", 256, "5e0b5c395025229c", 128, "a8d8afb2e16575b1"),
    "midi/testPrimitive/test07.mid": ("4e277c41f336ddf7", 706, "ced3d29ef7730ea8", 236, "e4df1bde60caff03"),
    "midi/testPrimitive/test08.mid": ("e5eb00ad5a79c013", 48, "f23ed98672d3ad0b", 25, "665418f54346bef8"),
    "midi/testPrimitive/test09.mid": ("622404a45b8c642e", 981, "2194c7b2b0068cc0", 542, "24d27abcaf9d8986"),
    "midi/testPrimitive/test10.mid": ("e5340d185b76d9ef", 61, "4a149630fcd6eda5", 40, "0abecf512e4ddc98"),
    "midi/testPrimitive/test11.mid": ("3a0118bf2e40552e", 63, "0287125505994c44", 42, "1a43a828e58f737c"),
    "midi/testPrimitive/test12.mid": ("3d60ab506405c726", 32, "4821e53cbd283912", 19, "847e67fd7f3feda1"),
    "midi/testPrimitive/test13.mid": ("b4c02476c7162359", 48, "482305fb29942e59", 24, "17fd55c5c8ff7ec1"),
    "midi/testPrimitive/test14.mid": ("0354c9171ad2ef8c", 44, "3dc6267191188626", 26, "8cb4c7804ca052f2"),
    "midi/testPrimitive/test15.mid": ("c5da87aa8cc13f2e", 5, "d3021686808e250e", 3, "1f0e736d7782846b"),
    "midi/testPrimitive/test16.mid": ("21af06c081d71069", 6, "739fa9f91dc42afe", 3, "c5fbcf151ce5d30e"),
    "midi/testPrimitive/test17.mid": ("d476d0ea1c3f24e1", 48, "e202028c1a4ab663", 24, "11084fd66596a8dc"),
    "midi/testPrimitive/test18.mid": ("8bb316360e3ac9dc", 140, "c7ba9690acce31c1", 70, "7b4d7958a1360559"),
    "midi/testPrimitive/test19.mid": ("e0103b6084d0b3bd", 140, "c7ba9690acce31c1", 70, "7b4d7958a1360559"),
    "midi/testPrimitive/test20.mid": ("81fe08413c352ac4", 140, "cfcd258564f4ce55", 70, "8247f58f0a8f2435"),
    "midi/testPrimitive/test21.mid": ("db86c647e86f49af", 140, "cfcd258564f4ce55", 70, "8247f58f0a8f2435"),
    "omr/k525MIDIMvt1.mid": ("166c1332be576197", 3067, "0389d6b3d3f48da8", 1305, "4054049a180094a9"),
    "omr/k525short.mid": ("c5b7b54e23c14ae7", 127, "166501493590d4b4", 66, "5f3f804eba046355"),
}

TEMPO_CHANGE_ROLLS = [  # (seed, step_seconds, tempo changes (tick, bpm), steps_per_beat=4 roll, step_seconds roll)
    (1, 0.25, [(960, 90), (3000, 150)], 240, "a9db8fa8de70d080", 108, "b51434afad94c318"),
    (2, 0.5, [(0, 100), (1, 200), (2000, 45)], 480, "3c5104a27494c122", 301, "e1a71e94ee713595"),
    (3, 0.2, [(500, 133.3), (501, 60), (4000, 240)], 240, "effc6486efd625db", 136, "fdb064ba76cd4ce2"),
]


def _digest(data) -> str:
    return hashlib.sha256(bytes(data)).hexdigest()[:16]


def _recorded(roll: np.ndarray) -> tuple[int, str]:
    return roll.shape[0], _digest(np.ascontiguousarray(roll, dtype=np.uint8).tobytes())


@pytest.mark.parametrize("name", sorted(MUSIC21_ROLLS))
def test_real_files_read_into_the_recorded_rolls(name):
    import music21

    data = (Path(music21.__file__).parent / name).read_bytes()
    file_digest, beat_frames, beat_roll, time_frames, time_roll = MUSIC21_ROLLS[name]
    if _digest(data) != file_digest:
        pytest.skip(f"this music21 ships another {name}; its recorded roll does not apply")
    assert _recorded(midi_to_roll((name, data), steps_per_beat=4)) == (beat_frames, beat_roll)
    assert _recorded(midi_to_roll((name, data), step_seconds=0.25)) == (time_frames, time_roll)


def with_tempo_changes(roll: np.ndarray, step_seconds: float, changes: list[tuple[int, float]]) -> bytes:
    """``roll_to_midi``'s file with ``set_tempo`` events ``(tick, bpm)`` added to its first track; a change
    on a tick that holds one already comes after it."""
    file = mido.MidiFile(file=io.BytesIO(roll_to_midi_bytes(roll, step_seconds=step_seconds)))
    track = file.tracks[0]
    events, now = [], 0
    for message in track:
        now += message.time
        events.append((now, message))
    events += [(tick, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))) for tick, bpm in changes]
    events.sort(key=lambda event: (event[0], event[1].type == "end_of_track"))
    track.clear()
    now = 0
    for tick, message in events:
        track.append(message.copy(time=tick - now))
        now = tick
    buffer = io.BytesIO()
    file.save(file=buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("seed, step, changes, beat_frames, beat_roll, time_frames, time_roll", TEMPO_CHANGE_ROLLS)
def test_written_files_with_tempo_changes_read_into_the_recorded_rolls(make_rolls, seed, step, changes, beat_frames,
                                                                      beat_roll, time_frames, time_roll):
    data = with_tempo_changes(make_rolls(1, 120, seed=seed)[0], step, changes)
    assert _recorded(midi_to_roll(data, steps_per_beat=4)) == (beat_frames, beat_roll)
    assert _recorded(midi_to_roll(data, step_seconds=step)) == (time_frames, time_roll)
