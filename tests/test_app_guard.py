"""What the app may not do to others: delete or stop a run another process writes, take over a dataset name,
guess the teacher password without limit, or lose its runs folder when started from another folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from appkit import app_environment, new_app, no_exceptions, show, texts
from conftest import chorale_like_piece

from lapmusic.core.errors import DataError, LapMusicError
from lapmusic.data.dataset import Dataset
from lapmusic.data.user import (
    dataset_label,
    owner_tag,
    save_user_dataset,
    user_dataset_keys,
    user_dataset_path,
)
from lapmusic.jobs import sessions
from lapmusic.jobs.manager import JobManager
from lapmusic.jobs.sessions import PasswordGuard


@pytest.fixture(scope="module")
def app_env(tmp_path_factory):
    yield from app_environment(tmp_path_factory)


def config(seed: int) -> dict:
    return {"dataset": "bach", "hidden": 8, "init": "lae", "epochs": 2, "seed": seed}


@pytest.fixture
def writer():
    """Another process holding a run folder's writer lock, as ``lapmusic train --resume`` does."""
    children = []

    def start(run_dir: Path) -> subprocess.Popen:
        code = ("import sys; from lapmusic.core.lock import run_lock\n"
                f"with run_lock({str(run_dir)!r}):\n    print('held', flush=True); sys.stdin.read()\n")
        child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
        children.append(child)
        assert child.stdout.readline().strip() == "held"
        return child

    yield start
    for child in children:
        child.stdin.close()
        child.wait(timeout=30)


# ------------------------------------------------------------------------------ destructive actions check the lock
def test_a_run_written_by_the_lapmusic_command_cannot_be_deleted_or_stopped_from_the_app(tmp_path, writer):
    manager = JobManager(tmp_path / "runs", max_jobs=1, cuda=False, start=False)
    job = manager.submit(config(1), session="a")
    assert manager.cancel(job.id, "a") == "cancelled"  # the app thinks it is over: Delete is offered
    child = writer(job.run_dir)  # `lapmusic train --resume` in a terminal holds it now
    with pytest.raises(LapMusicError, match=rf"{job.id} is being written by the lapmusic process {child.pid} "
                                            r"on this machine \(since .* UTC\).*cannot be deleted"):
        manager.delete(job.id, "a")
    with pytest.raises(LapMusicError, match=rf"being written by the lapmusic process {child.pid}.*not by this server"):
        manager.cancel(job.id, "a", teacher=True)
    assert (job.run_dir / "config.json").is_file()  # nothing lost
    child.stdin.close()
    child.wait(timeout=30)
    assert manager.cancel(job.id, "a") == "unknown"
    manager.delete(job.id, "a")
    assert not job.run_dir.exists()


def test_a_queued_run_resumed_in_a_terminal_is_not_marked_cancelled_by_the_app(tmp_path, writer):
    manager = JobManager(tmp_path / "runs", max_jobs=1, cuda=False, start=False)
    job = manager.submit(config(2), session="a")
    child = writer(job.run_dir)
    with pytest.raises(LapMusicError, match=rf"lapmusic process {child.pid}"):
        manager.cancel(job.id, "a")
    assert job.state == "queued" and manager.queue_position(job.id) == 1


# ------------------------------------------------------------------------------ datasets owned
def _tiny(name: str, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    pieces = [chorale_like_piece(rng, 16) for _ in range(3)]
    return Dataset(f"user:{name}", name, pieces[:1], pieces[1:2], pieces[2:], step_seconds=0.25)


def test_two_sessions_choosing_the_same_name_get_two_datasets_and_none_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("LAPMUSIC_CACHE_DIR", str(tmp_path))
    a = save_user_dataset(_tiny("my-songs", 1), owner="session-a")
    b = save_user_dataset(_tiny("my-songs", 2), owner="session-b")
    assert a == f"user:my-songs-{owner_tag('session-a')}" and a != b
    assert re.fullmatch(r"u[0-9a-f]{8}", owner_tag("session-a"))
    first = user_dataset_path(a).read_bytes()
    with pytest.raises(DataError, match=rf"^a dataset {a} exists already; choose another name$"):
        save_user_dataset(_tiny("my-songs", 3), owner="session-a")
    assert user_dataset_path(a).read_bytes() == first  # not replaced
    shared = save_user_dataset(_tiny("class-songs"))
    assert shared == "user:class-songs"
    with pytest.raises(DataError, match=r"exists already; choose another name, or replace it \(lapmusic datasets "
                                        r"add --replace\)"):
        save_user_dataset(_tiny("class-songs", 4))
    assert save_user_dataset(_tiny("class-songs", 4), replace=True) == shared  # the CLI's --replace
    # Each session sees the shared datasets and its own; the server machine's CLI sees all.
    assert user_dataset_keys("session-a", everyone=False) == [shared, a]
    assert user_dataset_keys("session-c", everyone=False) == [shared]
    assert user_dataset_keys() == sorted([shared, a, b])
    assert dataset_label(a) == "my-songs (yours)" and dataset_label(shared) == "class-songs (shared)"
    assert not list(tmp_path.glob("user/.*"))  # no drafts left behind


def test_the_cli_replace_flag_still_overwrites_and_its_absence_refuses(tmp_path, monkeypatch):
    from lapmusic.cli.main import main
    from lapmusic.data.midi import roll_to_midi_bytes

    monkeypatch.setenv("LAPMUSIC_CACHE_DIR", str(tmp_path / "cache"))
    song = tmp_path / "a.mid"
    song.write_bytes(roll_to_midi_bytes(chorale_like_piece(np.random.default_rng(5), 32), step_seconds=0.25))
    assert main(["datasets", "add", "tunes", str(song)]) == 0
    assert main(["datasets", "add", "tunes", str(song)]) == 2  # one line: "exists already ... --replace"
    assert main(["datasets", "add", "tunes", str(song), "--replace"]) == 0


def test_the_app_builds_a_dataset_per_session_and_releases_the_upload(app_env):
    from lapmusic.data.midi import roll_to_midi_bytes

    song = roll_to_midi_bytes(chorale_like_piece(np.random.default_rng(1), 32), step_seconds=0.25)
    built = []
    for _ in range(2):  # two browser sessions, both keeping the default name
        at = new_app()
        at.sidebar.selectbox(key="dataset_choice").set_value("__upload__")
        at.run()
        at.sidebar.file_uploader(key="uploads_0").set_value([("song.mid", song, "audio/midi")])
        at.run()
        at.sidebar.button(key="build_upload").click()
        at.run()
        no_exceptions(at)
        built.append(at.sidebar.selectbox(key="dataset_choice").value)
        assert at.session_state["upload_round"] == 1  # a new, empty upload widget
        # Building again under the same name is refused with the reason, not a silent replacement.
        at.sidebar.selectbox(key="dataset_choice").set_value("__upload__")
        at.run()
        at.sidebar.file_uploader(key="uploads_1").set_value([("song.mid", song, "audio/midi")])
        at.run()
        at.sidebar.button(key="build_upload").click()
        at.run()
        errors = [e.replace("\\", "") for e in texts(at.sidebar, "error")]  # names are shown escaped
        assert any(f"a dataset {built[-1]} exists already; choose another name" in e for e in errors), errors
    assert built[0] != built[1]
    assert all(re.fullmatch(r"user:my-songs-u[0-9a-f]{8}", key) for key in built)
    # A session's dataset list holds its own dataset, not the other session's.
    options = at.sidebar.selectbox(key="dataset_choice").options
    assert any("my-songs (yours)" in o for o in options) and sum("my-songs" in o for o in options) == 1


def test_a_shared_dataset_is_seen_by_everyone_and_never_replaced(app_env):
    from lapmusic.data.midi import roll_to_midi_bytes

    song = roll_to_midi_bytes(chorale_like_piece(np.random.default_rng(2), 32), step_seconds=0.25)
    at = new_app()
    at.sidebar.selectbox(key="dataset_choice").set_value("__upload__")
    at.run()
    at.sidebar.file_uploader(key="uploads_0").set_value([("song.mid", song, "audio/midi")])
    at.sidebar.text_input(key="upload_name").set_value("our songs")
    at.sidebar.checkbox(key="upload_shared").check()
    at.run()
    at.sidebar.button(key="build_upload").click()
    at.run()
    assert at.sidebar.selectbox(key="dataset_choice").value == "user:our-songs"
    other = new_app()
    assert "my MIDI: our-songs (shared)" in other.sidebar.selectbox(key="dataset_choice").options  # its labels


# ------------------------------------------------------------------------------ the teacher password
class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_wrong_teacher_passwords_get_a_growing_delay_then_a_lockout_per_address(monkeypatch):
    monkeypatch.setenv("LAPMUSIC_TEACHER_PASSWORD", "orchestra")
    clock = Clock()
    guard = PasswordGuard(free_tries=3, max_tries=6, lockout_seconds=900, clock=clock)
    for left in (5, 4, 3):
        assert guard.attempt("10.0.0.7", "guess") == f"Wrong password ({left} more tries before teacher mode is locked for this address)."
    assert guard.attempt("10.0.0.7", "guess") == "Wrong password (2 more tries before teacher mode is locked for this address)."
    # 4 wrong: the next try waits 2 s, and is refused without looking at the password, even the right one.
    assert guard.attempt("10.0.0.7", "orchestra") == "Wrong password 4 times: wait 2 s before trying again."
    clock.now += 2.0
    assert guard.attempt("10.0.0.7", "guess").startswith("Wrong password (1 more")
    assert guard.wait_seconds("10.0.0.7") == 4.0  # the delay doubles
    clock.now += 4.0
    assert "locked for 15 minutes" in guard.attempt("10.0.0.7", "guess")
    clock.now += 600
    assert guard.attempt("10.0.0.7", "orchestra") == ("Too many wrong passwords from your address (6): teacher "
                                                      "mode is locked for 5 more minute(s).")
    assert guard.attempt("10.0.0.8", "orchestra") is None  # another address is not locked out
    clock.now += 300
    assert guard.attempt("10.0.0.7", "orchestra") is None  # after the lockout, the right password works...
    assert guard.wait_seconds("10.0.0.7") == 0.0  # ...and forgets the failures


def test_the_teacher_box_says_how_many_tries_are_left_and_locks(app_env, monkeypatch):
    monkeypatch.setenv("LAPMUSIC_TEACHER_PASSWORD", "orchestra")
    monkeypatch.setattr(sessions, "TEACHER_GUARD", PasswordGuard(free_tries=1, max_tries=2))
    at = show(new_app(), "Runs")
    messages = []
    for _ in range(3):
        at.text_input(key="teacher_password").set_value("wrong")
        at.button(key="teacher_enter").click()
        at.run()
        no_exceptions(at)
        messages.append(texts(at, "error")[-1])
    assert messages[0].startswith("Wrong password (1 more tries")
    assert "locked for 15 minutes" in messages[1]
    assert messages[2].startswith("Too many wrong passwords from your address (2)")
    at.text_input(key="teacher_password").set_value("orchestra")
    at.button(key="teacher_enter").click()
    at.run()
    assert "teacher" not in at.session_state  # locked: even the right password waits


# ------------------------------------------------------------------------------ the runs folder
def test_a_relative_runs_folder_is_taken_from_the_app_folder_whatever_the_working_folder(monkeypatch, tmp_path):
    from lapmusic.ui import server

    monkeypatch.setenv("LAPMUSIC_RUNS_DIR", "class-runs")
    monkeypatch.chdir(tmp_path)
    assert server.runs_dir() == (server.APP_FOLDER / "class-runs").resolve()
    assert server.runs_dir().is_absolute()
    monkeypatch.setenv("LAPMUSIC_RUNS_DIR", str(tmp_path / "abs"))
    assert server.runs_dir() == tmp_path / "abs"


def test_the_runs_page_says_who_writes_a_run_instead_of_deleting_it(app_env, monkeypatch, writer):
    from lapmusic.core.io import atomic_write_json

    monkeypatch.setenv("LAPMUSIC_TEACHER_PASSWORD", "orchestra")
    monkeypatch.setattr(sessions, "TEACHER_GUARD", PasswordGuard())
    run_dir = Path(app_env) / "runs" / "resumed-in-a-terminal"
    atomic_write_json(run_dir / "config.json", {"dataset": "user:tiny", "hidden": 6, "init": "random", "epochs": 3})
    atomic_write_json(run_dir / "status.json", {"state": "interrupted"})  # what the app last saw
    child = writer(run_dir)
    at = show(new_app(), "Runs")
    at.text_input(key="teacher_password").set_value("orchestra")
    at.button(key="teacher_enter").click()
    at.run()
    assert at.session_state["teacher"] is True  # the teacher may delete any stopped run...
    at.multiselect(key="runs_chosen").set_value([str(run_dir)])
    at.run()
    at.button(key="runs_delete").click()
    at.run()
    no_exceptions(at)
    # ...but not one that a live process writes: the page names it, and nothing is removed.
    assert any(f"is being written by the lapmusic process {child.pid} on this machine" in e
               for e in texts(at, "error")), texts(at, "error")
    assert (run_dir / "config.json").is_file()
