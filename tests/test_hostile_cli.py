"""Red team, command-line half: what a user or an attacker gives ``lapmusic`` on the command line, replayed.

Each case ends in one ``error:`` line and exit 2 (never a traceback), loses nothing, and writes no file outside
the folders the user named: devices and FIFOs given as MIDI files, a flood of tempo changes, SIGTERM during
``train``, a ``train`` that fails before its first epoch, an LAE file fitted with other settings or data, a
dataset changed under a trained run, ``compare`` with ``LAPMUSIC_RUNS_DIR`` set, and names typed in capitals.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import random_rolls

from lapmusic.cli import main as cli
from lapmusic.core.errors import DataError
from lapmusic.data.dataset import Dataset
from lapmusic.data.midi import midi_to_roll
from lapmusic.data.midifile import MidiLimits, read_midi
from lapmusic.data.user import save_user_dataset

ROOT = Path(__file__).resolve().parents[1]


def smf(track: bytes, ticks_per_beat: int = 480) -> bytes:
    """A format-0 Standard MIDI File around one track's event bytes."""
    return (b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big")
            + ticks_per_beat.to_bytes(2, "big") + b"MTrk" + len(track).to_bytes(4, "big") + track)


def tempo_flood(changes: int) -> bytes:
    """``changes`` tempo changes one tick apart (7 bytes each, 600 bpm), then a note of one beat: ``changes + 3``
    events (the note's on and off, the end of track)."""
    return smf(b"\x01\xff\x51\x03\x01\x86\xa0" * changes + b"\x00\x90\x3c\x50\x83\x60\x3c\x00\x00\xff\x2f\x00")


def user_dataset(name: str, seed: int, sizes=(6, 2, 2), length=(12, 20)) -> str:
    """Save a small random user dataset (in this test's cache folder); its key."""
    train, valid, test = (random_rolls(n, length, seed=seed + k, density=0.2) for k, n in enumerate(sizes))
    return save_user_dataset(Dataset(key=f"user:{name}", name=name, train=train, valid=valid, test=test), replace=True)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAPMUSIC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


TINY = ["--hidden", "4", "--epochs", "1", "--batch-size", "4", "--bptt", "8", "--device", "cpu"]


# ------------------------------------------------------------------------------ devices and FIFOs
def test_datasets_add_refuses_a_device_before_reading_it(cache, capsys):
    assert cli.main(["datasets", "add", "zeros", "/dev/zero"]) == 2
    line = error_line(capsys)
    assert "zero: not a regular file" in line
    assert not (cache / "user" / "zeros.npz").exists()


def test_datasets_add_refuses_a_fifo_without_waiting_for_a_writer(cache, tmp_path, capsys):
    fifo = tmp_path / "pipe.mid"
    os.mkfifo(fifo)
    codes = []
    worker = threading.Thread(target=lambda: codes.append(cli.main(["datasets", "add", "pipe", str(fifo)])),
                              daemon=True)
    worker.start()
    worker.join(timeout=60)
    if worker.is_alive():  # unblock the reader before failing, so the test process can exit
        with open(fifo, "wb"):
            pass
        pytest.fail("datasets add waited for a writer on a FIFO")
    assert codes == [2]
    assert "pipe.mid: not a regular file" in error_line(capsys)


def test_read_midi_reads_at_most_one_byte_past_the_limit(tmp_path, monkeypatch):
    path = tmp_path / "big.mid"
    path.write_bytes(b"MThd" + bytes(5000))
    real_stat, real_fstat = os.stat, os.fstat

    def shrunk(measure):  # a file system that under-reports the size (or a file that grew since it was measured)
        def stat(*args, **kwargs):
            info = measure(*args, **kwargs)
            return os.stat_result((info.st_mode, *info[1:6], 10, *info[7:]))
        return stat

    monkeypatch.setattr(os, "stat", shrunk(real_stat))
    monkeypatch.setattr(os, "fstat", shrunk(real_fstat))
    with pytest.raises(DataError, match=r"too large \(1 KB, 1,025 bytes; the limit is 1 KB"):
        read_midi(path, MidiLimits(max_bytes=1024))


# ------------------------------------------------------------------------------ event floods
def test_an_8_mb_tempo_flood_is_refused_at_the_event_limit_cheaply():
    attack = tempo_flood(1_190_000)
    assert 7.9 * 2**20 < len(attack) <= MidiLimits().max_bytes
    # The scan stops at event 500,001, so its tempo map holds at most 500,000 changes of 16 bytes (it held
    # 1.2 M before, and the scan went to the end of the file); its CPU time is in benchmarks/bench_upload.py.
    with pytest.raises(DataError, match=r"too many events: more than 500,000 in all .*LAPMUSIC_MAX_MIDI_EVENTS"):
        midi_to_roll(("tempo.mid", attack), steps_per_beat=2)


def test_the_event_limit_counts_every_event_of_every_track(monkeypatch):
    monkeypatch.setenv("LAPMUSIC_MAX_MIDI_EVENTS", "13")
    assert midi_to_roll(("ok.mid", tempo_flood(10)), steps_per_beat=2).shape == (2, 88)  # 13 events: accepted
    with pytest.raises(DataError, match="too many events: more than 12"):
        midi_to_roll(("over.mid", tempo_flood(10)), steps_per_beat=2, limits=MidiLimits(max_events=12))
    track = b"\x00\xff\x51\x03\x07\xa1\x20" * 4 + b"\x00\xff\x2f\x00"  # 5 events
    two_tracks = (b"MThd" + (6).to_bytes(4, "big") + (1).to_bytes(2, "big") + (2).to_bytes(2, "big")
                  + (480).to_bytes(2, "big") + (b"MTrk" + len(track).to_bytes(4, "big") + track) * 2)
    assert len(read_midi(two_tracks, MidiLimits(max_events=10))) == 0
    with pytest.raises(DataError, match="more than 9"):
        read_midi(two_tracks, MidiLimits(max_events=9))


# ------------------------------------------------------------------------------ names
def test_dataset_names_are_case_insensitive(cache, capsys):
    from lapmusic.cli.common import check_dataset
    from lapmusic.data.registry import dataset_key

    assert dataset_key(" JSB ") == "jsb" and dataset_key("PianoMidi") == "pianomidi"
    user_dataset("my songs", seed=0)
    assert check_dataset("User:My Songs") == "user:my-songs"
    with pytest.raises(DataError, match="unknown dataset 'JSBX'"):
        check_dataset("JSBX")


def test_train_accepts_a_name_in_capitals_and_records_the_registered_key(cache, tmp_path, capsys):
    user_dataset("caps", seed=0)
    out = tmp_path / "run"
    assert cli.main(["train", "--dataset", "USER:Caps", "--init", "random", *TINY, "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["dataset"] == "user:caps"


def test_the_datasets_table_makes_room_for_long_names(cache, capsys):
    user_dataset("a very long dataset name for the whole class", seed=0)
    assert cli.main(["datasets", "--no-load"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0]
    row = next(line for line in lines if line.startswith("user:a-very-long"))
    key = row.split()[0]
    assert row[len(key)] == " " and row.index("local") == header.index("status") > len(key)
    assert row.split()[1] == "local"


def test_the_lae_progress_counts_the_columns_of_xi_one_way():
    from lapmusic.lae.fit import fit_lae

    pieces = random_rolls(4, (20, 30), seed=1, density=0.2)
    for solver in ("approx", "exact"):
        messages = []
        fit_lae(pieces, 4, solver=solver, progress=lambda f, m: messages.append(m))
        counts = {int(word) for m in messages for word, after in zip(m.split(), m.split()[1:] + [""])
                  if word.isdigit() and after.startswith("columns")}
        assert counts == {88 * max(len(p) for p in pieces)}, (solver, messages)


# ------------------------------------------------------------------------------ compare
def test_compare_writes_under_lapmusic_runs_dir(cache, tmp_path, monkeypatch, capsys):
    user_dataset("cmp", seed=0)
    runs = tmp_path / "shared-runs"
    monkeypatch.setenv("LAPMUSIC_RUNS_DIR", str(runs))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["compare", "--dataset", "user:cmp", *TINY, "--seeds", "1"]) == 0
    assert sorted(p.name for p in (runs / "compare").iterdir()) == ["user_cmp-h4-e1-lae-s0", "user_cmp-h4-e1-random-s0"]
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------ failed and stopped runs
def test_a_train_that_fails_before_its_first_epoch_leaves_no_folder(cache, tmp_path, capsys):
    user_dataset("novalid", seed=0, sizes=(4, 0, 1))
    out = tmp_path / "new" / "run"
    assert cli.main(["train", "--dataset", "user:novalid", *TINY, "--out", str(out)]) == 2
    assert "has no validation piece" in error_line(capsys)
    assert not (tmp_path / "new").exists()  # and the parent it created for it


def test_a_failed_start_in_an_existing_folder_keeps_it_with_the_reason(cache, tmp_path, capsys):
    user_dataset("novalid", seed=0, sizes=(4, 0, 1))
    out = tmp_path / "run"
    out.mkdir()  # as the app's jobs do: the page shows the reason
    assert cli.main(["train", "--dataset", "user:novalid", *TINY, "--out", str(out)]) == 2
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "failed" and "has no validation piece" in status["error"]


def test_a_folder_with_a_checkpoint_or_foreign_files_is_never_removed(tmp_path):
    from lapmusic.training.stopping import first_missing, remove_failed_start

    run = tmp_path / "a" / "run"
    created = first_missing(run)
    assert created == tmp_path / "a"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "checkpoint.pt").write_bytes(b"x")
    assert not remove_failed_start(run, created) and (run / "config.json").exists()
    (run / "checkpoint.pt").unlink()
    (run / "notes.txt").write_text("mine")
    assert not remove_failed_start(run, created) and (run / "notes.txt").exists()
    (run / "notes.txt").unlink()
    assert remove_failed_start(run, created) and not (tmp_path / "a").exists()
    assert not remove_failed_start(tmp_path, None) and tmp_path.exists()


def test_sigterm_during_train_records_the_run_as_stopped(cache, tmp_path):
    user_dataset("long", seed=0, sizes=(8, 2, 2), length=(40, 60))
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "lapmusic.cli", "train", "--dataset", "user:long", "--init", "random", "--hidden", "8",
         "--epochs", "100000", "--batch-size", "2", "--bptt", "8", "--device", "cpu", "--out", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.pt").exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130 and "Traceback" not in err, err
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "cancelled" and "SIGTERM" in status["message"]
    assert (out / "checkpoint.pt").exists()


# ------------------------------------------------------------------------------ the LAE file
def test_train_refuses_an_lae_file_fitted_with_other_settings_or_data(cache, tmp_path, capsys):
    user_dataset("songs", seed=0, length=20)
    user_dataset("other", seed=10, length=20)
    lae, paper = tmp_path / "lae.npz", tmp_path / "paper.npz"
    assert cli.main(["lae", "--dataset", "user:songs", "--hidden", "4", "--out", str(lae), "--device", "cpu"]) == 0
    assert cli.main(["lae", "--dataset", "user:songs", "--hidden", "4", "--decay", "1", "--out", str(paper),
                     "--device", "cpu"]) == 0
    capsys.readouterr()
    run = ["train", "--dataset", "user:songs", *TINY, "--lae-file"]
    assert cli.main([*run, str(paper), "--out", str(tmp_path / "a")]) == 2
    line = error_line(capsys)
    assert "other settings than this run's: lag weighting 1 (this run: --lae-decay 0.3)." in line
    assert not (tmp_path / "a").exists()
    assert cli.main([*run, str(paper), "--lae-decay", "1", "--lae-max-lag", "5", "--out", str(tmp_path / "a")]) == 2
    assert "other settings than this run's: 20 lags (this run: 5, from --lae-max-lag" in error_line(capsys)
    other = ["train", "--dataset", "user:other", *TINY, "--lae-file", str(lae)]
    assert cli.main([*other, "--out", str(tmp_path / "b")]) == 2
    assert "other training pieces" in error_line(capsys)
    for name, path, extra in (("c", paper, ["--lae-decay", "1"]), ("d", lae, [])):  # lae's default is training's
        assert cli.main([*run, str(path), *extra, "--out", str(tmp_path / name)]) == 0
        assert json.loads((tmp_path / name / "final.json").read_text())["pretrain"]["lae_reused"] is True


def test_lae_refuses_a_decay_out_of_range(cache, capsys):
    user_dataset("songs", seed=0, length=20)
    for bad in ("0", "1.5", "nan"):
        assert cli.main(["lae", "--dataset", "user:songs", "--hidden", "4", "--decay", bad]) == 2
        assert "--decay must be above 0 and at most 1" in error_line(capsys)


# ------------------------------------------------------------------------------ data fingerprint
def test_a_run_refuses_data_that_changed_under_it(cache, tmp_path, capsys):
    key = user_dataset("class", seed=0)
    out = tmp_path / "run"
    assert cli.main(["train", "--dataset", key, "--init", "random", *TINY, "--out", str(out)]) == 0
    recorded = json.loads((out / "data.json").read_text())
    assert recorded["dataset"] == key and recorded["splits"]["train"]["pieces"] == 6
    assert json.loads((out / "final.json").read_text())["data"] == recorded
    assert cli.main(["evaluate", str(out), "--json"]) == 0
    before = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert before["data_changed"] is None

    user_dataset("class", seed=5)  # another student's files under the same name
    assert cli.main(["evaluate", str(out)]) == 2
    line = error_line(capsys)
    assert "the data of dataset 'user:class' changed since run" in line and "--changed-data" in line
    assert "its train split had 6 pieces, " in line and "its test split had 2 pieces, " in line
    status = (out / "status.json").read_text()
    assert cli.main(["train", "--resume", str(out), "--epochs", "2"]) == 2
    assert "refusing to resume it with other data" in error_line(capsys)
    assert (out / "status.json").read_text() == status  # the refused resume changed nothing
    assert cli.main(["generate", str(out), "--primer", "train:0:4", "--steps", "4",
                     "--out", str(tmp_path / "x.mid")]) == 2
    assert "refusing to take a primer from it with other data" in error_line(capsys)
    assert not (tmp_path / "x.mid").exists()
    assert cli.main(["evaluate", str(out), "--changed-data", "--json"]) == 0
    after = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert "changed since run" in after["data_changed"] and after["nll"] != before["nll"]

    (out / "data.json").unlink()  # a run from before runs recorded their data still works
    assert cli.main(["evaluate", str(out), "--json"]) == 0


def test_a_dataset_with_other_piece_counts_is_named_by_its_sizes():
    from lapmusic.data.fingerprint import dataset_fingerprint, describe_change

    class Data:
        def __init__(self, seed, n):
            self.train = random_rolls(n, 10, seed=seed)
            self.valid = self.test = random_rolls(1, 10, seed=9)

    then, now = dataset_fingerprint(Data(0, 3)), dataset_fingerprint(Data(0, 4))
    assert describe_change(then, then) is None
    assert describe_change(then, now) == "its train split had 3 pieces, 30 frames and now has 4 pieces, 40 frames"
    rolls = Data(0, 3)
    rolls.train[1] = rolls.train[1].copy()
    rolls.train[1][0, 0] ^= 1  # one note
    assert "holds other notes" in describe_change(then, dataset_fingerprint(rolls))
