"""The job manager's parts that need no worker process: run names and keys, the queue file, estimates,
session tokens, quotas, defensive run summaries, the shared dataset cache. (Worker processes:
tests/test_workers.py.)"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime

import numpy as np
import pytest

from lapmusic.core.errors import LapMusicError
from lapmusic.core.io import atomic_write_json, read_json
from lapmusic.data.cache import DatasetCache, dataset_token
from lapmusic.jobs import estimate, limits, runs, sessions
from lapmusic.jobs.limits import Quotas, default_max_jobs
from lapmusic.jobs.manager import JobManager
from lapmusic.jobs.queue import PersistentQueue
from lapmusic.jobs.runs import (
    INTERRUPTED,
    LEGACY_STALE_SECONDS,
    QUEUED,
    RUNNING,
    list_runs,
    newest_lae_first,
    run_folder_name,
    summarize_run,
)

WAIT = 20.0


def config(**overrides):
    base = {"dataset": "bach", "hidden": 8, "init": "lae", "epochs": 2, "seed": 0}
    base.update(overrides)
    return base


@pytest.fixture
def runs_dir(tmp_path):
    return tmp_path / "runs"


def idle_manager(runs_dir, **kwargs):
    """A manager whose scheduler does not run: jobs stay queued (quota and queue tests)."""
    kwargs.setdefault("max_jobs", 1)
    return JobManager(runs_dir, cuda=False, start=False, **kwargs)


# ------------------------------------------------------------------------------ names
def test_run_folder_names_are_readable_and_safe():
    when = datetime(2026, 11, 27, 14, 5, 12)
    name = run_folder_name(config(dataset="user:my songs/1"), now=when, student="Anna <b>!")
    assert name.startswith("user_my_songs_1-lae-h8-20261127-140512-Anna-b-")
    assert "/" not in name and ":" not in name and " " not in name and "<" not in name
    assert runs.run_title(config(init="random", hidden=128), when.timestamp(), "Anna") == "bach · random · h128 · 14:05 · Anna"
    assert runs.run_title(config(), None, "*![x](http://evil)*") == "bach · LAE · h8 · xhttpevil"


def test_a_new_session_opens_on_the_newest_lae_run(tmp_path):
    for n, init in enumerate(["random", "lae", "random", "lae"]):
        run = tmp_path / f"r{n}"
        atomic_write_json(run / "config.json", config(init=init))
        os.utime(run / "config.json", (1000 + n, 1000 + n))
    listed = list_runs(tmp_path)
    assert [r.name for r in listed] == ["r3", "r2", "r1", "r0"]
    assert newest_lae_first(listed)[0].name == "r3"
    listed = [r for r in listed if r.name != "r3"]
    assert [r.name for r in newest_lae_first(listed)] == ["r1", "r2", "r0"]
    assert newest_lae_first([r for r in listed if r.config["init"] == "random"])[0].name == "r2"


# ------------------------------------------------------------------------------ keys
def test_the_run_key_covers_config_dataset_and_code():
    key = runs.run_key(config(), dataset="d1", code="c1", cuda=False)
    assert key == runs.run_key(dict(reversed(list(config().items()))), dataset="d1", code="c1", cuda=False)
    assert key != runs.run_key(config(seed=1), dataset="d1", code="c1", cuda=False)
    assert key != runs.run_key(config(lr=0.01), dataset="d1", code="c1", cuda=False)
    assert key != runs.run_key(config(), dataset="d2", code="c1", cuda=False)
    assert key != runs.run_key(config(), dataset="d1", code="c2", cuda=False)
    assert key != runs.run_key(config(), dataset="d1", code="c1", cuda=True)  # device auto means CUDA there


def test_the_dataset_version_follows_the_files_content(monkeypatch, tmp_path):
    from lapmusic.data.dataset import Dataset
    from lapmusic.data.user import save_user_dataset

    monkeypatch.setenv("LAPMUSIC_CACHE_DIR", str(tmp_path))
    assert runs.dataset_version("user:mine") == "user:mine:absent"
    piece = np.zeros((4, 88), dtype=np.uint8)
    piece[:, 40] = 1
    save_user_dataset(Dataset("user:mine", "mine", [piece], [piece], [piece]))
    first = runs.dataset_version("user:mine")
    piece[:, 41] = 1
    save_user_dataset(Dataset("user:mine", "mine", [piece], [piece], [piece]), replace=True)
    assert runs.dataset_version("user:mine") != first
    assert runs.code_version().startswith("0.") and "+" in runs.code_version()


# ------------------------------------------------------------------------------ quotas
def test_only_new_runs_count_against_the_session_and_client_limits(runs_dir):
    manager = idle_manager(runs_dir, quotas=Quotas(per_session=2, per_client=3))
    first = [manager.submit(config(seed=s), session="eager", client="10.0.0.5") for s in (1, 2)]
    assert manager.slots_left("eager", "10.0.0.5") == 0 and manager.slots_left("other") == 2
    with pytest.raises(LapMusicError, match="this browser may have at most 2 new runs"):
        manager.submit(config(seed=3), session="eager", client="10.0.0.5")
    assert manager.submit(config(seed=1), session="eager", client="10.0.0.5") is first[0]  # attaching is free
    # A second browser on the same computer: its own session, but the client limit (3) still counts.
    manager.submit(config(seed=4), session="second-tab", client="10.0.0.5")
    with pytest.raises(LapMusicError, match=r"this computer \(10.0.0.5\) may have at most 3 new runs"):
        manager.submit(config(seed=5), session="third-tab", client="10.0.0.5")
    manager.submit(config(seed=5), session="third-tab", client=None)  # the server's own machine: no client limit
    assert manager.cancel(first[0].id, "eager") == "cancelled"
    assert manager.slots_left("eager", "10.0.0.5") == 1


def test_limits_come_from_the_environment(monkeypatch, runs_dir):
    for name in ("LAPMUSIC_MAX_JOBS", "LAPMUSIC_MAX_JOBS_PER_SESSION", "LAPMUSIC_MAX_JOBS_PER_CLIENT"):
        monkeypatch.delenv(name, raising=False)
    assert limits.default_max_per_session() == 2 and limits.default_max_per_client() == 4
    monkeypatch.setenv("LAPMUSIC_MAX_JOBS_PER_SESSION", "4")
    monkeypatch.setenv("LAPMUSIC_MAX_JOBS_PER_CLIENT", "0")
    monkeypatch.setenv("LAPMUSIC_MAX_JOBS", "3")
    manager = idle_manager(runs_dir, max_jobs=None)
    assert (manager.quotas.per_session, manager.quotas.per_client, manager.max_jobs) == (4, None, 3)
    monkeypatch.setenv("LAPMUSIC_MAX_JOBS_PER_SESSION", "many")
    assert limits.default_max_per_session() == 2


def test_the_default_slots_follow_the_machine(monkeypatch):
    monkeypatch.delenv("LAPMUSIC_MAX_JOBS", raising=False)
    monkeypatch.setattr(limits, "cuda_devices", lambda: 0)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert default_max_jobs() == 8
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert default_max_jobs() == 1
    monkeypatch.setattr(limits, "cuda_devices", lambda: 2)
    assert default_max_jobs() == 2


# ------------------------------------------------------------------------------ the queue on disk
def test_the_queue_file_keeps_order_and_refuses_paths_outside(tmp_path):
    queue = PersistentQueue(tmp_path)
    for name in ("a", "b", "c"):
        queue.append(tmp_path / name, 1.0)
    queue.append(tmp_path / "b", 2.0)  # already queued: no duplicate
    queue.append(tmp_path / "z", 0.5, front=True)
    assert queue.pop() == (tmp_path / "z").resolve()
    assert queue.remove(tmp_path / "b") and not queue.remove(tmp_path / "b")
    again = PersistentQueue(tmp_path)
    assert [r.name for r, _ in again.load()] == ["a", "c"]
    atomic_write_json(queue.path, {"queue": [{"run": "/etc"}, {"run": "../x"}, {"run": "ok"}, "junk"]})
    assert [r.name for r, _ in again.load()] == ["ok"]


def test_a_restart_requeues_queued_runs_missing_from_the_file_and_drops_finished_ones(runs_dir):
    first = idle_manager(runs_dir)
    a, b, c = (first.submit(config(seed=s)) for s in (1, 2, 3))
    first.close()
    atomic_write_json(b.run_dir / "status.json", {"state": "finished"})
    (runs_dir / ".lapmusic" / "queue.json").unlink()  # lost: the run folders still say queued
    second = idle_manager(runs_dir)
    assert [second.queue_position(j.id) for j in (a, b, c)] == [1, None, 2]


def test_a_dead_running_run_comes_back_interrupted_or_requeued(runs_dir):
    first = idle_manager(runs_dir)
    with_checkpoint, without = first.submit(config(seed=1)), first.submit(config(seed=2))
    first.close()
    for job in (with_checkpoint, without):
        atomic_write_json(job.run_dir / "status.json", {"state": "running", "epoch": 1, "updated": time.time()})
        atomic_write_json(job.run_dir / "worker.json", {"pid": 2**22 + 7, "host": os.uname().nodename,
                                                         "heartbeat": time.time()})
    (with_checkpoint.run_dir / "checkpoint.pt").write_bytes(b"x")
    second = idle_manager(runs_dir)
    assert second.get(with_checkpoint.id).state == INTERRUPTED
    summary = summarize_run(with_checkpoint.run_dir, second)
    assert summary.state == INTERRUPTED and summary.resumable
    assert second.get(without.id).state == QUEUED and second.queue_position(without.id) == 1
    assert read_json(without.run_dir / "status.json")["state"] == "queued"


def test_a_run_of_the_cli_is_running_while_its_status_is_fresh(runs_dir):
    live = runs_dir / "cli-run"
    atomic_write_json(live / "config.json", config())
    atomic_write_json(live / "status.json", {"state": "running", "epoch": 3, "updated": time.time()})
    (live / "checkpoint.pt").write_bytes(b"x")
    summary = summarize_run(live)
    assert summary.state == RUNNING and summary.elsewhere and not summary.resumable
    atomic_write_json(live / "status.json", {"state": "running", "epoch": 3,
                                              "updated": time.time() - LEGACY_STALE_SECONDS - 1})
    summary = summarize_run(live)
    assert summary.state == INTERRUPTED and summary.resumable


def test_bad_files_in_a_run_folder_give_defaults_not_errors(runs_dir):
    run = runs_dir / "bad"
    atomic_write_json(run / "config.json", config())
    (run / "metrics.jsonl").write_text('{"epoch": "abc"}\n{"epoch": 2}\nnot json\n')
    (run / "status.json").write_text("{")
    (run / "job.json").write_text("[]")
    summary = summarize_run(run)
    assert summary.epochs_done == 2 and summary.job == {} and summary.state == INTERRUPTED


# ------------------------------------------------------------------------------ estimates
def test_the_schedule_matches_a_brute_force_simulation():
    rng = np.random.default_rng(0)
    for _ in range(50):
        slots = int(rng.integers(1, 4))
        running = [float(x) for x in rng.uniform(0, 10, size=int(rng.integers(0, slots + 1)))]
        queued = [float(x) for x in rng.uniform(1, 10, size=int(rng.integers(0, 6)))]
        # Brute force: each queued job starts at the earliest candidate time (0 or any end) at which fewer
        # than `slots` jobs (running ones and those placed before it) are busy.
        intervals = [(0.0, end) for end in running]
        expected = []
        for duration in queued:
            candidates = sorted({0.0} | {end for _, end in intervals})
            start = next(t for t in candidates if sum(1 for a, b in intervals if a <= t < b) < slots)
            intervals.append((start, start + duration))
            expected.append((start, start + duration))
        got = estimate.schedule(running, queued, slots)
        assert np.allclose(np.array(got).reshape(-1), np.array(expected).reshape(-1))
    assert estimate.remaining(100.0, 30.0, 0.5) == 30.0 and estimate.remaining(100.0, 30.0, None) == 70.0


# ------------------------------------------------------------------------------ sessions
def test_session_links_verify_and_made_up_ids_do_not(tmp_path):
    secret = sessions.server_secret(tmp_path)
    assert sessions.server_secret(tmp_path) == secret and len(secret) == 32
    assert oct((tmp_path / ".lapmusic" / "secret").stat().st_mode & 0o777) == "0o600"
    session, token = sessions.new_session(secret)
    assert sessions.verify(secret, session, token)
    assert not sessions.verify(secret, "alice", token)
    assert not sessions.verify(secret, session, token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert not sessions.verify(secret, session, None) and not sessions.verify(secret, None, token)
    assert not sessions.verify(sessions.server_secret(tmp_path / "other"), session, token)
    assert len({sessions.new_session(secret)[0] for _ in range(100)}) == 100


def test_the_teacher_password(monkeypatch):
    monkeypatch.delenv("LAPMUSIC_TEACHER_PASSWORD", raising=False)
    assert not sessions.is_teacher_password("") and not sessions.is_teacher_password("x")
    monkeypatch.setenv("LAPMUSIC_TEACHER_PASSWORD", "s3cret")
    assert sessions.is_teacher_password("s3cret") and not sessions.is_teacher_password("s3cre")


def test_delete_needs_the_only_follower_or_the_teacher(runs_dir):
    manager = idle_manager(runs_dir)
    mine = manager.submit(config(seed=1), session="a")
    shared = manager.submit(config(seed=2), session="a")
    manager.submit(config(seed=2), session="b")
    with pytest.raises(LapMusicError, match="stop it before deleting"):
        manager.delete(mine.id, "a")
    for job in (mine, shared):
        manager.cancel(job.id, teacher=True)
    manager.delete(mine.id, "a")
    assert not mine.run_dir.exists()
    with pytest.raises(LapMusicError, match="only the teacher"):
        manager.delete(shared.id, "a")
    with pytest.raises(LapMusicError, match="inside the runs folder"):
        manager.delete("../../etc", teacher=True)
    manager.delete(shared.id, teacher=True)
    assert not shared.run_dir.exists()


# ------------------------------------------------------------------------------ the dataset cache
class SlowLoader:
    """A dataset loader that blocks until ``gate`` opens, counts its calls and reports progress."""

    def __init__(self, fail_first: bool = False):
        self.gate = threading.Event()
        self.calls = 0
        self.fail_first = fail_first

    def __call__(self, key, progress=None):
        self.calls += 1
        progress(0.5, f"building {key}")
        self.gate.wait(WAIT)
        if self.fail_first and self.calls == 1:
            raise LapMusicError(f"could not download {key}")
        return {"key": key, "call": self.calls}


def test_the_dataset_cache_loads_once_for_every_waiter():
    loader = SlowLoader()
    cache = DatasetCache(loader)
    results = []
    waiters = [
        threading.Thread(target=lambda: results.append(cache.get("bach", progress=lambda f, m: None)))
        for _ in range(3)
    ]
    for thread in waiters:
        thread.start()
    entry = cache.start("bach")
    while entry.message != "building bach":  # the load runs in its own thread
        threading.Event().wait(0.01)
    loader.gate.set()
    for thread in waiters:
        thread.join(WAIT)
    assert loader.calls == 1
    assert results == [{"key": "bach", "call": 1}] * 3 and results[0] is results[1]
    assert cache.get("bach") is results[0]


def test_a_failed_dataset_load_reaches_every_waiter_and_is_retried():
    loader = SlowLoader(fail_first=True)
    loader.gate.set()
    cache = DatasetCache(loader)
    with pytest.raises(LapMusicError, match="could not download jsb"):
        cache.get("jsb")
    assert cache.get("jsb") == {"key": "jsb", "call": 2}




def test_a_rebuilt_user_dataset_gets_a_new_token(monkeypatch, tmp_path):
    from lapmusic.data.dataset import Dataset
    from lapmusic.data.user import save_user_dataset

    monkeypatch.setenv("LAPMUSIC_CACHE_DIR", str(tmp_path))
    assert dataset_token("bach") == "bach"
    assert dataset_token("user:absent") == "user:absent"
    piece = [np.zeros((4, 88), dtype=np.uint8)]
    piece[0][:, 40] = 1
    save_user_dataset(Dataset("user:mine", "mine", piece, piece, piece))
    first = dataset_token("user:mine")
    path = tmp_path / "user" / "mine.npz"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert first.startswith("user:mine@") and dataset_token("user:mine") != first


