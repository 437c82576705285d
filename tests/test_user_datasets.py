"""Datasets from your own MIDI files: the function behind the app's upload and ``lapmusic datasets add``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lapmusic.cli import main as cli
from lapmusic.core.errors import DataError
from lapmusic.data.midi import roll_to_midi_bytes
from lapmusic.data.registry import load_dataset
from lapmusic.data.user import dataset_from_midi, save_user_dataset, user_dataset_keys


def test_dataset_from_midi_keeps_good_files_and_names_bad_ones(tmp_path, make_rolls):
    rolls = make_rolls(5, (12, 30), seed=5)
    for roll in rolls:
        roll[-1, 30] = 1
    files = [(f"piece{i}.mid", roll_to_midi_bytes(r, step_seconds=0.25)) for i, r in enumerate(rolls)]
    files += [
        ("notes.txt", b"hello"),
        ("broken.mid", b"MThd\x00\x00\x00\x06\x00\x01\x00\x05\x01\xe0MTrk\xff\xff\xff\xff"),
        ("empty.mid", b""),
        ("silent.mid", roll_to_midi_bytes(np.zeros((4, 88), np.uint8))),
        ("huge.mid", b"MThd" + b"\x00" * 5000),
    ]
    dataset, bad = dataset_from_midi(files, "My Songs", step_seconds=0.25, max_bytes=4000)
    reasons = {b.name: b.reason for b in bad}
    assert set(reasons) == {"notes.txt", "broken.mid", "empty.mid", "silent.mid", "huge.mid"}
    assert "not a MIDI file" in reasons["notes.txt"] and "corrupt" in reasons["broken.mid"]
    assert "too large" in reasons["huge.mid"] and "no notes" in reasons["silent.mid"]
    pieces = dataset.train + dataset.valid + dataset.test
    assert len(pieces) == 5 and len(dataset.train) == 4
    for got, want in zip(pieces, rolls):
        np.testing.assert_array_equal(got, want)
    key = save_user_dataset(dataset)
    assert key == "user:my-songs" and key in user_dataset_keys()
    reloaded = load_dataset(key)
    np.testing.assert_array_equal(reloaded.train[0], rolls[0])


def test_dataset_from_midi_reads_a_folder_and_refuses_when_nothing_is_usable(tmp_path, make_rolls):
    for i, roll in enumerate(make_rolls(2, 16, seed=2)):
        (tmp_path / f"{i}.mid").write_bytes(roll_to_midi_bytes(roll))
    (tmp_path / "readme.txt").write_text("ignored: not a .mid file")
    dataset, bad = dataset_from_midi([tmp_path], steps_per_beat=4)
    assert len(dataset.train) + len(dataset.valid) + len(dataset.test) == 2 and bad == []
    with pytest.raises(DataError, match=r"no usable MIDI file \(x.mid: not a MIDI file"):
        dataset_from_midi([("x.mid", b"nope")])


def test_cli_datasets_add_makes_a_user_dataset_like_the_app(tmp_path, monkeypatch, capsys, make_rolls):
    monkeypatch.setenv("LAPMUSIC_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "songs"
    folder.mkdir()
    rolls = make_rolls(10, (12, 20), seed=4)
    for i, roll in enumerate(rolls):
        roll[-1, 40] = 1
        (folder / f"{i:02d}.mid").write_bytes(roll_to_midi_bytes(roll, step_seconds=0.25))
    (folder / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\x00\x00\x01\x00\x00")
    extra = tmp_path / "notes.txt"
    extra.write_text("hello")
    argv = ["datasets", "add", "Class Songs", str(folder), str(extra), "--step-seconds", "0.25", "--json"]
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["key"] == "user:class-songs" and result["split_sizes"] == {"train": 8, "valid": 1, "test": 1}
    assert {r["name"]: r["reason"].split(":")[0] for r in result["refused"]} == {
        "broken.mid": "truncated MIDI file", "notes.txt": "not a MIDI file (it does not start with the 'MThd' header)"}
    loaded = load_dataset("user:class-songs")
    np.testing.assert_array_equal(loaded.train[0], rolls[0])  # the app's function: same rolls, same order
    # A second add with the same name is refused unless --replace; a missing path is named.
    assert cli.main(argv[:4]) == 2
    assert "user:class-songs exists already" in capsys.readouterr().err
    assert cli.main(argv[:4] + ["--replace"]) == 0
    assert "made user:class-songs from 10 file(s): 8 train / 1 valid / 1 test" in capsys.readouterr().out
    assert cli.main(["datasets", "add", "x", str(tmp_path / "missing.mid")]) == 2
    assert f"no such file or folder: {tmp_path / 'missing.mid'}" in capsys.readouterr().err
