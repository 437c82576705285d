"""Red team: the inputs an attacker or an unlucky user sends, replayed.

Each case must end in a :class:`LapMusicError` whose message says what was wrong, the limit and what to do,
never a traceback, and a refused file must be refused before anything of its claimed size is allocated
(checked with ``tracemalloc``'s peak, not with time: speed lives in ``benchmarks/bench_upload.py``).
"""

from __future__ import annotations

import io
import math
import pickle
import tracemalloc
from pathlib import Path

import mido
import numpy as np
import pytest

from lapmusic.cli import main as cli
from lapmusic.core.errors import DataError, LapMusicError
from lapmusic.data.dataset import Dataset
from lapmusic.data.files import load_pickle
from lapmusic.data.midi import midi_to_roll, roll_to_midi_bytes
from lapmusic.data.midifile import MidiLimits
from lapmusic.data.user import UploadLimits, dataset_from_midi, save_user_dataset

MB = 1024 * 1024


def tiny_then_far(tick: int, ticks_per_beat: int = 1) -> bytes:
    """The issue's attack: a few dozen bytes, one note at tick 0 and a second one at ``tick``."""
    file = mido.MidiFile(ticks_per_beat=ticks_per_beat)
    track = mido.MidiTrack()
    file.tracks.append(track)
    track.append(mido.Message("note_on", note=60, velocity=80, time=0))
    track.append(mido.Message("note_off", note=60, velocity=0, time=1))
    track.append(mido.Message("note_on", note=62, velocity=80, time=tick))
    track.append(mido.Message("note_off", note=62, velocity=0, time=1))
    buffer = io.BytesIO()
    file.save(file=buffer)
    return buffer.getvalue()


def smf(track: bytes, ticks_per_beat: int = 480) -> bytes:
    """A format-0 Standard MIDI File around one track's event bytes."""
    return (b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big")
            + ticks_per_beat.to_bytes(2, "big") + b"MTrk" + len(track).to_bytes(4, "big") + track)


def dense(notes: int, ticks_per_chord: int = 120) -> bytes:
    """``notes`` notes as chords of 4, one after the other, each ``ticks_per_chord`` long (480 ticks a
    beat), with running status: the densest honest file, 3 bytes an event."""
    body = bytearray(b"\x00\x90")
    for chord in range(notes // 4):
        pitches = [36 + (chord + 7 * k) % 48 for k in range(4)]
        for k, pitch in enumerate(pitches):
            body += bytes([pitch, 80]) if chord == 0 and k == 0 else bytes([0, pitch, 80])
        for k, pitch in enumerate(pitches):
            body += bytes([ticks_per_chord if k == 0 else 0, pitch, 0])
    body += b"\x00\xff\x2f\x00"
    return smf(bytes(body))


def peak_bytes(function, *args, **kwargs):
    """(result or exception, peak traced allocation in bytes) of one call."""
    tracemalloc.start()
    try:
        try:
            outcome = function(*args, **kwargs)
        except LapMusicError as exc:
            outcome = exc
        return outcome, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ------------------------------------------------------------------------------ hostile MIDI
def test_the_52_byte_file_with_a_note_at_tick_ten_million_is_refused_before_any_roll():
    attack = tiny_then_far(9_999_990)
    assert len(attack) < 60
    outcome, peak = peak_bytes(midi_to_roll, ("attack.mid", attack), steps_per_beat=2)
    assert isinstance(outcome, DataError)
    message = str(outcome)
    assert message.startswith("attack.mid: too long") and "LAPMUSIC_MAX_MIDI_SECONDS" in message
    assert "cut it into shorter pieces, or raise the limit" in message
    assert peak < 1 * MB  # 20 million frames of 88 keys would be 1.76 GB


def test_a_long_file_within_seconds_is_still_refused_by_its_frame_count(monkeypatch):
    monkeypatch.setenv("LAPMUSIC_MAX_MIDI_SECONDS", str(100 * 86400))  # seconds no longer stop it
    outcome, peak = peak_bytes(midi_to_roll, ("attack.mid", tiny_then_far(2_000_000)), steps_per_beat=2)
    assert isinstance(outcome, DataError)
    assert "4,000,004 frames; the limit is 20,000 (LAPMUSIC_MAX_MIDI_FRAMES)" in str(outcome)
    assert peak < 1 * MB


def test_a_huge_tick_from_maximal_time_deltas_is_refused_cheaply():
    # 64 deltas of 0x0FFFFFFF ticks (the largest a time value holds): the last note is at tick ~1.7e10.
    body = bytearray(b"\x00\x90\x3c\x50\x00\x3c\x00")
    for _ in range(64):
        body += b"\xff\xff\xff\x7f\xff\x01\x00"  # delta 0x0FFFFFFF, an empty text event
    body += b"\x00\x90\x3e\x50\x01\x3e\x00\x00\xff\x2f\x00"
    outcome, peak = peak_bytes(midi_to_roll, ("far.mid", smf(bytes(body), 96)), step_seconds=0.25)
    assert isinstance(outcome, DataError) and "far.mid: too long" in str(outcome)
    assert "days" in str(outcome)
    assert peak < 1 * MB


def test_a_dense_file_within_the_limits_is_accepted_and_costs_little_memory():
    notes = 20_000
    outcome, peak = peak_bytes(midi_to_roll, ("dense.mid", dense(notes)), steps_per_beat=4)
    assert isinstance(outcome, np.ndarray)
    assert outcome.shape == (notes // 4, 88)  # a chord of 4 every 120 ticks = a quarter beat = one frame
    assert (outcome.sum(axis=1) == 4).all()
    assert peak < 40 * MB


def test_too_many_notes_are_refused_while_scanning(monkeypatch):
    monkeypatch.setenv("LAPMUSIC_MAX_MIDI_NOTES", "1000")
    with pytest.raises(DataError, match=r"dense.mid: too many notes: more than 1,000 \(the limit, "
                                        r"LAPMUSIC_MAX_MIDI_NOTES\); split the file"):
        midi_to_roll(("dense.mid", dense(1004)), steps_per_beat=2)
    assert midi_to_roll(("dense.mid", dense(1000)), steps_per_beat=2).any()


@pytest.mark.parametrize(
    "events, what",
    [(b"\xff" * 100_000 + b"\x7f\x90\x3c\x50", "a time value longer than 4 bytes"),
     (b"\x00\xff\x01" + b"\xff" * 100_000 + b"\x00", "an event length longer than 4 bytes"),
     (b"\x00\xf0" + b"\x80" * 100_000 + b"\x00", "an event length longer than 4 bytes")],
    ids=["time value", "meta event length", "sysex length"],
)
def test_over_long_variable_length_numbers_are_refused_at_once(events, what):
    # The standard caps them at 4 bytes; decoded without a cap (as mido does) they cost quadratic time.
    outcome, peak = peak_bytes(midi_to_roll, ("long.mid", smf(events + b"\x00\xff\x2f\x00")), steps_per_beat=2)
    assert isinstance(outcome, DataError)
    assert str(outcome).startswith(f"long.mid: corrupt MIDI file (track 1: {what} at byte ")
    assert peak < 1 * MB


@pytest.mark.parametrize("cut", [10, 30, 100])
def test_a_truncated_file_says_it_is_truncated(cut):
    whole = roll_to_midi_bytes(np.eye(88, dtype=np.uint8)[:, ::-1].repeat(2, axis=0))
    with pytest.raises(DataError, match=r"^cut.mid: truncated MIDI file: .*get it again"):
        midi_to_roll(("cut.mid", whole[:-cut]), step_seconds=0.25)


@pytest.mark.parametrize(
    "value, what",
    [("abc", "is not a positive number"), ("-5", "is not a positive number"), ("nan", "is not a positive number"),
     ("inf", "is not a positive number"), ("0.5", "is not a positive number")],
)
def test_a_bad_limit_in_the_environment_is_named(monkeypatch, value, what):
    monkeypatch.setenv("LAPMUSIC_MAX_MIDI_NOTES", value)
    with pytest.raises(DataError, match=f"LAPMUSIC_MAX_MIDI_NOTES='{value}' {what}"):
        MidiLimits.from_env()


# ------------------------------------------------------------------------------ uploads
def _good_file(i: int) -> tuple[str, bytes]:
    roll = np.zeros((8, 88), dtype=np.uint8)
    roll[:, 30 + i % 40] = 1
    return f"song{i}.mid", roll_to_midi_bytes(roll)


def _never_parse(monkeypatch):
    import lapmusic.data.user as userdata

    monkeypatch.setattr(userdata, "read_midi_piece", lambda *a, **k: pytest.fail("parsed despite the upload limit"))


def test_too_many_files_in_one_upload_are_refused_before_parsing(monkeypatch):
    _never_parse(monkeypatch)
    with pytest.raises(DataError, match=r"too many files: 51 in one upload; the limit is 50 "
                                        r"\(LAPMUSIC_MAX_UPLOAD_FILES\); make the dataset from fewer files"):
        dataset_from_midi([_good_file(i) for i in range(51)], "many")


def test_a_folder_with_too_many_files_is_refused_without_listing_it_all(tmp_path, monkeypatch):
    for i in range(12):
        (tmp_path / f"{i:02d}.mid").write_bytes(_good_file(i)[1])
    monkeypatch.setenv("LAPMUSIC_MAX_UPLOAD_FILES", "5")
    _never_parse(monkeypatch)
    with pytest.raises(DataError, match=r"too many files: more than 5 in one upload"):
        dataset_from_midi([tmp_path], "folder")


def test_too_many_bytes_in_one_upload_are_refused_before_parsing(monkeypatch):
    files = [_good_file(i) for i in range(3)]
    limit = sum(len(b) for _, b in files) - 1
    monkeypatch.setenv("LAPMUSIC_MAX_UPLOAD_BYTES", str(limit))
    _never_parse(monkeypatch)
    with pytest.raises(DataError, match=rf"too much data: {limit + 1} bytes in one upload; "
                                        rf"the limit is {limit} bytes \(LAPMUSIC_MAX_UPLOAD_BYTES\)"):
        dataset_from_midi(files, "big")


def test_an_upload_keeps_good_files_and_names_each_hostile_one():
    files = [_good_file(i) for i in range(4)] + [
        ("attack.mid", tiny_then_far(9_999_990)),
        ("cut.mid", _good_file(9)[1][:-5]),
        ("smpte.mid", b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\xe7\x28MTrk\x00\x00\x00\x04\x00\xff\x2f\x00"),
    ]
    dataset, bad = dataset_from_midi(files, "mixed")
    assert len(dataset.train) + len(dataset.valid) + len(dataset.test) == 4
    reasons = {b.name: b.reason for b in bad}
    assert reasons["attack.mid"].startswith("too long")
    assert reasons["cut.mid"].startswith("truncated MIDI file")
    assert "SMPTE" in reasons["smpte.mid"]


def test_the_cli_reports_refused_files_and_never_a_traceback(tmp_path, capsys):
    folder = tmp_path / "midi"
    folder.mkdir()
    for i in range(3):
        (folder / f"song{i}.mid").write_bytes(_good_file(i)[1])
    (folder / "attack.mid").write_bytes(tiny_then_far(9_999_990))
    assert cli.main(["datasets", "add", "red team", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "made user:red-team from 3 file(s)" in out
    assert "refused attack.mid: too long" in out
    assert cli.main(["datasets", "add", "only bad", str(folder / "attack.mid")]) == 2
    err = capsys.readouterr().err
    assert "\nerror: no usable MIDI file (attack.mid: too long" in err and "Traceback" not in err


# ------------------------------------------------------------------------------ bad pickles
@pytest.mark.parametrize(
    "piece, shown",
    [
        ([[60, "C4"]], "'C4' (str)"),
        ([[60], None], "frame 1 is NoneType None"),
        ([[60, None]], "None (NoneType)"),
        ([[60.0, math.nan]], "nan (float)"),
        ([[60.5]], "60.5 (float)"),
        ("not frames", "expected a list of frames, got str"),
    ],
)
def test_pickles_with_strings_none_or_nan_pitches_are_refused_clearly(tmp_path, piece, shown):
    path = tmp_path / "JSB Chorales.pickle"
    path.write_bytes(pickle.dumps({"train": [piece], "valid": [], "test": []}, protocol=2))
    with pytest.raises(DataError, match=r"^JSB Chorales\.pickle train\[0\]: ") as caught:
        load_pickle(path)
    message = str(caught.value)
    assert message.startswith("JSB Chorales.pickle train[0]: ") and shown in message
    assert "ValueError" not in message and "TypeError" not in message


# ------------------------------------------------------------------------------ Markdown names
def test_markdown_in_names_is_escaped():
    from lapmusic.ui.sidebar import escape_markdown

    name = "![pixel](http://127.0.0.1:9/p.png) [link](http://x) :red[hi] <b>x</b>\n# head.mid"
    shown = escape_markdown(name)
    for raw in ("![", "](", ":red[", "<b>", "\n"):
        assert raw not in shown
    assert "\\# head" in shown
    assert shown.replace("\\", "") == name.replace("\n", " ")  # nothing lost, only escaped


def test_the_app_shows_markdown_file_and_dataset_names_literally(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LAPMUSIC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LAPMUSIC_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("LAPMUSIC_APP_DEFAULTS", '{"dataset": "user:seed", "hidden": 8, "epochs": 1}')
    rolls = [np.eye(88, dtype=np.uint8)[i:i + 8] for i in range(4)]
    save_user_dataset(Dataset("user:seed", "seed", rolls[:2], rolls[2:3], rolls[3:], 0.25))
    app = str(Path(__file__).resolve().parents[1] / "app.py")
    at = AppTest.from_file(app, default_timeout=60).run()
    at.sidebar.selectbox(key="dataset_choice").set_value("__upload__").run()
    evil = "![x](http://127.0.0.1:9/pixel.png).mid"
    at.sidebar.file_uploader(key="uploads_0").set_value(
        [(evil, b"not midi", "audio/midi")] + [(n, b, "audio/midi") for n, b in map(_good_file, range(3))]
    )
    at.sidebar.text_input(key="upload_name").set_value("**bold** ![y](http://127.0.0.1:9/y.png)")
    at.run()
    at.sidebar.button(key="build_upload").click().run()
    warnings = [w.value for w in at.sidebar.warning]
    assert warnings == ["\\!\\[x\\]\\(http\\://127.0.0.1\\:9/pixel.png\\).mid: not a MIDI file \\(it does not "
                        "start with the 'MThd' header\\)"]
    titles = [m.value for m in at.markdown if "bold" in m.value]
    assert titles and all("![" not in t and "**bold**" not in t for t in titles)
    assert not at.exception


# ------------------------------------------------------------------------------ planted music21 cache
def test_a_planted_music21_cache_is_never_loaded_and_a_build_of_nothing_is_an_error(tmp_path, monkeypatch):
    from music21 import converter, corpus

    from lapmusic.data import bach

    monkeypatch.setenv("LAPMUSIC_CACHE_DIR", str(tmp_path / "cache"))
    scratch = bach.music21_scratch()
    assert scratch == tmp_path / "cache" / "music21"
    marker = tmp_path / "ran"

    class Hostile:
        def __reduce__(self):
            return (Path.touch, (marker,))

    # Plant a hostile parse cache exactly where music21 would look for the first chorale's.
    first = sorted((p for p in corpus.getComposer("bach") if p.name.startswith("bwv") and p.suffix == ".mxl"),
                   key=lambda p: p.name)[0]
    planted = converter.PickleFilter(first).getPickleFp(scratch, zipType="gz")
    import gzip

    with gzip.open(planted, "wb") as handle:
        pickle.dump(Hostile(), handle)
    built = bach.build_bach(limit=3)
    assert len(built.train) + len(built.valid) + len(built.test) >= 2 and not marker.exists()
    assert sorted(p.name for p in scratch.iterdir()) == [planted.name]  # music21 wrote nothing there either

    monkeypatch.setattr(corpus, "parse", lambda *a, **k: (_ for _ in ()).throw(OSError("planted junk")))
    with pytest.raises(DataError, match=r"the Bach build made 0 pieces from 3 corpus files, 3 of which did not "
                                        r"parse \(first failure: .*planted junk\); reinstall music21"):
        bach.build_bach(limit=3)


def test_upload_limits_default_to_the_documented_values(monkeypatch):
    for variable in ("LAPMUSIC_MAX_UPLOAD_FILES", "LAPMUSIC_MAX_UPLOAD_BYTES", "LAPMUSIC_MAX_MIDI_BYTES",
                     "LAPMUSIC_MAX_MIDI_SECONDS", "LAPMUSIC_MAX_MIDI_NOTES", "LAPMUSIC_MAX_MIDI_FRAMES"):
        monkeypatch.delenv(variable, raising=False)
    assert UploadLimits.from_env() == UploadLimits(max_files=50, max_bytes=16 * MB)
    assert MidiLimits.from_env() == MidiLimits(max_bytes=8 * MB, max_seconds=1200.0, max_notes=200_000,
                                               max_frames=20_000)


def test_the_app_refuses_too_many_files_before_reading_them(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LAPMUSIC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LAPMUSIC_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("LAPMUSIC_MAX_UPLOAD_FILES", "3")
    monkeypatch.setenv("LAPMUSIC_APP_DEFAULTS", '{"dataset": "user:seed", "hidden": 8, "epochs": 1}')
    rolls = [np.eye(88, dtype=np.uint8)[i:i + 8] for i in range(4)]
    save_user_dataset(Dataset("user:seed", "seed", rolls[:2], rolls[2:3], rolls[3:], 0.25))
    _never_parse(monkeypatch)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=60).run()
    at.sidebar.selectbox(key="dataset_choice").set_value("__upload__").run()
    at.sidebar.file_uploader(key="uploads_0").set_value([(n, b, "audio/midi") for n, b in map(_good_file, range(4))])
    at.run()
    at.sidebar.button(key="build_upload").click().run()
    assert [e.value for e in at.sidebar.error] == [
        "too many files\\: 4 in one upload; the limit is 3 \\(LAPMUSIC\\_MAX\\_UPLOAD\\_FILES\\); make the dataset "
        "from fewer files, or raise the limit"]
    assert not at.exception


@pytest.mark.parametrize("grid", [{"step_seconds": 1e-300}, {"steps_per_beat": 10**15}])
def test_absurd_time_steps_are_refused_by_the_frame_limit_not_an_overflow(grid):
    with pytest.raises(DataError, match=r"song1.mid: its piano roll would have (4.0e\+15|2.0e\+300) "
                                        r"frames; the limit is 20,000"):
        midi_to_roll(_good_file(1), **grid)
