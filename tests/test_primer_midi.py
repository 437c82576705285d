"""Your own music continued: MIDI files as primers, and the meter (tempo, time signature) carried from the
primer or the dataset into the generated MIDI. Every file is checked against pretty_midi's and mido's reading."""

from __future__ import annotations

import io

import mido
import numpy as np
import pretty_midi
import pytest

from lapmusic.core.errors import LapMusicError
from lapmusic.data.dataset import Dataset, load_dataset_npz, save_dataset_npz
from lapmusic.data.midi import midi_to_roll, read_midi_piece, roll_to_midi, roll_to_midi_bytes
from lapmusic.data.user import dataset_from_midi, save_user_dataset
from lapmusic.sampling.limits import MAX_PRIMER_FRAMES
from lapmusic.sampling.meter import output_meter
from lapmusic.sampling.primer import load_primer, parse_primer, primer_from_midi


def tune(qpm: float = 90.0, meter: tuple[int, int] | None = (3, 4), beats: int = 24, seed: int = 0) -> bytes:
    """A melody of quarter notes with a bass on every bar's first beat, at ``qpm`` in ``meter``."""
    rng = np.random.default_rng(seed)
    midi = pretty_midi.PrettyMIDI(initial_tempo=qpm)
    if meter:
        midi.time_signature_changes.append(pretty_midi.TimeSignature(*meter, 0.0))
    piano = pretty_midi.Instrument(0)
    beat = 60.0 / qpm
    bar = meter[0] if meter else 4
    for b in range(beats):
        piano.notes.append(pretty_midi.Note(80, 60 + int(rng.integers(0, 12)), b * beat, (b + 1) * beat))
        if b % bar == 0:
            piano.notes.append(pretty_midi.Note(70, 48, b * beat, min(b + bar, beats) * beat))
    midi.instruments.append(piano)
    buffer = io.BytesIO()
    midi.write(buffer)
    return buffer.getvalue()


def without_time_signature(data: bytes) -> bytes:
    """The file with its time-signature events removed (pretty_midi always writes one)."""
    song = mido.MidiFile(file=io.BytesIO(data))
    for track in song.tracks:
        kept, carry = [], 0
        for message in track:
            if message.type == "time_signature":
                carry += message.time
                continue
            kept.append(message.copy(time=message.time + carry))
            carry = 0
        track[:] = kept
    buffer = io.BytesIO()
    song.save(file=buffer)
    return buffer.getvalue()


def meter_of(data: bytes) -> tuple[tuple[int, int] | None, float]:
    """(first time signature, first tempo in qpm) as mido reads the file."""
    song = mido.MidiFile(file=io.BytesIO(data))
    signature = next(((m.numerator, m.denominator) for t in song.tracks for m in t if m.type == "time_signature"), None)
    tempo = next((m.tempo for t in song.tracks for m in t if m.type == "set_tempo"), 500_000)
    return signature, mido.tempo2bpm(tempo)


# ------------------------------------------------------------------------------------------ reading
@pytest.mark.parametrize("qpm, meter", [(90.0, (3, 4)), (140.0, (6, 8)), (120.0, (4, 4)), (72.0, (5, 4))])
def test_read_midi_piece_reads_the_meter_as_mido_does(qpm, meter):
    data = tune(qpm, meter)
    piece = read_midi_piece(data, steps_per_beat=2)
    assert piece.time_signature == meter == meter_of(data)[0]
    assert piece.qpm == pytest.approx(meter_of(data)[1], rel=1e-4)
    np.testing.assert_array_equal(piece.roll, midi_to_roll(data, steps_per_beat=2))
    # The roll follows the beat: 24 quarter notes on a grid of 2 frames a beat.
    assert piece.roll.shape[0] == 48


def test_a_file_without_time_signature_or_tempo_reads_none_and_120():
    data = without_time_signature(tune(90.0, (3, 4)))
    assert meter_of(data)[0] is None
    assert read_midi_piece(data, steps_per_beat=1).time_signature is None
    midi = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(0)
    piano.notes.append(pretty_midi.Note(80, 60, 0.0, 1.0))
    midi.instruments.append(piano)
    buffer = io.BytesIO()
    midi.write(buffer)
    assert read_midi_piece(buffer.getvalue(), steps_per_beat=1).qpm == pytest.approx(120.0, rel=1e-4)


def test_a_nonsense_time_signature_is_ignored():
    data = tune(90.0, (3, 4))
    # denominator exponent 2 (a quarter) -> 9 (2**9): no real meter; the reader keeps none rather than 3/512.
    broken = data.replace(b"\xff\x58\x04\x03\x02", b"\xff\x58\x04\x03\x09", 1)
    assert broken != data
    assert read_midi_piece(broken, steps_per_beat=1).time_signature is None


# ------------------------------------------------------------------------------------------ writing
def test_roll_to_midi_writes_the_time_signature_and_the_tempo():
    roll = np.zeros((12, 88), dtype=np.uint8)
    roll[::3, 39] = 1
    data = roll_to_midi_bytes(roll, step_seconds=60 / 90 / 2, frames_per_beat=2, time_signature=(3, 4))
    signature, qpm = meter_of(data)
    assert signature == (3, 4) and qpm == pytest.approx(90.0, rel=1e-4)
    # Without one: 4/4 at the tempo nearest 120 bpm, as before.
    signature, qpm = meter_of(roll_to_midi_bytes(roll, step_seconds=0.5))
    assert signature == (4, 4) and qpm == pytest.approx(120.0, rel=1e-4)
    with pytest.raises(LapMusicError, match="time_signature"):
        roll_to_midi(roll, time_signature=(3, 5))


# ------------------------------------------------------------------------------------------ datasets
def test_a_dataset_of_waltzes_records_three_four_at_their_tempo_and_keeps_it(tmp_path):
    files = [(f"w{i}.mid", tune(90.0, (3, 4), seed=i)) for i in range(4)] + [("march.mid", tune(90.0, (2, 4)))]
    dataset, bad = dataset_from_midi(files, "waltzes", steps_per_beat=2)
    assert not bad
    assert dataset.time_signature == (3, 4)  # the most common meter
    assert dataset.frames_per_beat == 2
    assert 60.0 / (dataset.frames_per_beat * dataset.step_seconds) == pytest.approx(90.0, rel=1e-4)
    path = save_dataset_npz(dataset, tmp_path / "w.npz")
    again = load_dataset_npz(path, "user:w")
    assert (again.time_signature, again.frames_per_beat, again.step_seconds) == (
        (3, 4), 2, pytest.approx(dataset.step_seconds))
    # A seconds grid keeps the meter, but its frames do not follow a beat.
    by_time, _ = dataset_from_midi(files, "waltzes", step_seconds=0.25)
    assert by_time.time_signature == (3, 4) and by_time.frames_per_beat is None and by_time.step_seconds == 0.25


def test_an_old_dataset_file_without_meter_still_loads_as_four_four(tmp_path):
    rolls = [np.eye(88, dtype=np.uint8)[:10]]
    path = save_dataset_npz(Dataset("user:old", "old", rolls, [], [], step_seconds=0.25), tmp_path / "old.npz")
    with np.load(path) as content:
        assert "time_signature" not in content.files and "frames_per_beat" not in content.files
    old = load_dataset_npz(path, "user:old")
    assert old.time_signature is None and old.frames_per_beat is None
    meter = output_meter("user:old", dataset=old)
    assert meter == output_meter(None, dataset=old)
    signature, qpm = meter_of(roll_to_midi_bytes(rolls[0], **meter.midi_options))
    assert signature == (4, 4) and qpm == pytest.approx(120.0, rel=1e-4)


# ------------------------------------------------------------------------------------------ primers
def test_a_midi_file_as_primer_is_read_on_the_models_grid(tmp_path):
    path = tmp_path / "mine.mid"
    path.write_bytes(tune(100.0, (3, 4)))
    whole = load_primer(str(path), None, frames_per_beat=2)
    np.testing.assert_array_equal(whole.roll, midi_to_roll(str(path), steps_per_beat=2))
    assert whole.time_signature == (3, 4) and whole.qpm == pytest.approx(100.0, rel=1e-4)
    start = parse_primer(f"{path}:6", None, frames_per_beat=2)
    np.testing.assert_array_equal(start, whole.roll[:6])
    by_quarter = load_primer(str(path), None, frames_per_beat=1)
    assert by_quarter.roll.shape[0] * 2 == whole.roll.shape[0]


@pytest.mark.parametrize(
    "make, spec, words",
    [
        (lambda p: p.write_bytes(tune(beats=200)), "{p}", f"at most {MAX_PRIMER_FRAMES} frames: use its start"),
        (lambda p: p.write_bytes(tune(beats=8)), "{p}:99", "only 16 frames long"),
        (lambda p: p.write_bytes(tune(beats=200)), "{p}:300", f"at most {MAX_PRIMER_FRAMES} frames"),
        (lambda p: p.write_bytes(tune(beats=8)), "{p}:0", "at least 1"),
        (lambda p: p.write_bytes(tune(beats=8)), "{p}:x", "not a whole number"),
        (lambda p: p.write_bytes(b"RIFF not a midi file"), "{p}", "not a MIDI file"),
        (lambda p: None, "{p}", "cannot read the file"),
    ],
)
def test_a_bad_midi_primer_is_refused_by_name(tmp_path, make, spec, words):
    path = tmp_path / "song.mid"
    make(path)
    text = spec.format(p=path)
    with pytest.raises(LapMusicError) as refused:
        parse_primer(text, None, frames_per_beat=2)
    message = str(refused.value)
    assert words in message and message.startswith("primer ") and "song.mid" in message
    assert "\n" not in message


def test_a_midi_primer_without_notes_is_refused():
    silent = pretty_midi.PrettyMIDI()
    drums = pretty_midi.Instrument(0, is_drum=True)
    drums.notes.append(pretty_midi.Note(80, 36, 0.0, 1.0))
    silent.instruments.append(drums)
    buffer = io.BytesIO()
    silent.write(buffer)
    with pytest.raises(LapMusicError, match="no notes"):
        primer_from_midi(("drums.mid", buffer.getvalue()), frames_per_beat=2)


def test_chord_and_piece_primers_are_bounded_before_they_are_built():
    with pytest.raises(LapMusicError, match=f"at most {MAX_PRIMER_FRAMES} frames"):
        parse_primer("chord:60,64,67:99999999", None)  # would be 8.8 GB if built
    with pytest.raises(LapMusicError, match=f"at most {MAX_PRIMER_FRAMES} frames"):
        parse_primer(f"test:0:{MAX_PRIMER_FRAMES + 1}", "jsb")  # refused before the dataset is loaded
    assert parse_primer(f"chord:60:{MAX_PRIMER_FRAMES}", None).shape == (MAX_PRIMER_FRAMES, 88)


# ------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def waltz_run(tmp_path_factory):
    """One epoch of a tiny RNN on a user dataset of 3/4 tunes at 90 qpm."""
    from lapmusic.training.config import TrainConfig
    from lapmusic.training.results import load_run
    from lapmusic.training.train import train

    dataset, _ = dataset_from_midi([(f"w{i}.mid", tune(90.0, (3, 4), seed=i)) for i in range(6)], "primer waltzes")
    key = save_user_dataset(dataset)
    run_dir = tmp_path_factory.mktemp("runs") / "waltz"
    train(TrainConfig.from_settings(dict(dataset=key, hidden=8, init="random", epochs=1, device="cpu", batch_size=4)),
          run_dir)
    return load_run(run_dir, device="cpu")


def test_samples_of_a_waltz_dataset_are_in_three_four_at_its_tempo(waltz_run):
    from lapmusic.sampling.sample import sample_run

    (sample,) = sample_run(waltz_run, steps=12, primer="chord:C4,E4,G4:2", seed=1)
    signature, qpm = meter_of(sample.midi_bytes())
    assert signature == (3, 4) and qpm == pytest.approx(90.0, rel=1e-3)


def test_a_midi_primer_is_continued_in_its_own_meter(waltz_run, tmp_path):
    from lapmusic.sampling.sample import sample_run

    path = tmp_path / "march.mid"
    path.write_bytes(tune(132.0, (2, 4), beats=6))
    first, second = sample_run(waltz_run, steps=10, primer=str(path), seed=2, n_samples=2)
    primer = midi_to_roll(str(path), steps_per_beat=2)  # the dataset's grid: 2 frames a beat
    for sample in (first, second):
        assert sample.primer_frames == len(primer) == 12
        np.testing.assert_array_equal(sample.roll[:12], primer)
        signature, qpm = meter_of(sample.midi_bytes())
        assert signature == (2, 4) and qpm == pytest.approx(132.0, rel=1e-3)
        assert sample.step_seconds == pytest.approx(60 / 132 / 2)
    assert not np.array_equal(first.roll, second.roll)  # two variations
