"""The background job manager, driven by a fake training function (no torch, fast, no sleeps as asserts)."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from lapmusic import jobs
from lapmusic.errors import LapMusicError
from lapmusic.io import atomic_write_json, read_jsonl

WAIT = 20.0  # generous timeout for a job that does no real work; only hit on a bug


class FakeTrain:
    """Stands in for lapmusic.train.train: writes metrics and status like it, obeys gates and cancel."""

    def __init__(self, epochs=2, gate: threading.Event | None = None, fail: BaseException | None = None):
        self.epochs = epochs
        self.gate = gate
        self.fail = fail
        self.calls: list[dict] = []
        self.started = threading.Semaphore(0)
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0

    def __call__(self, config, run_dir, *, progress=None, cancel=None, resume=False):
        with self.lock:
            self.calls.append({"config": config, "run_dir": run_dir, "resume": resume})
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        self.started.release()
        try:
            if self.gate is not None:
                while not self.gate.wait(0.01):
                    if cancel.is_set():
                        return {"state": "cancelled"}
            if self.fail is not None:
                raise self.fail
            for epoch in range(1, self.epochs + 1):
                if cancel.is_set():
                    atomic_write_json(run_dir / "status.json", {"state": "cancelled", "epoch": epoch - 1})
                    return {"state": "cancelled"}
                with open(run_dir / "metrics.jsonl", "a") as handle:
                    handle.write(json.dumps({"epoch": epoch, "train_nll": 10.0 / epoch}) + "\n")
                progress(epoch / self.epochs, f"epoch {epoch}/{self.epochs}")
            atomic_write_json(run_dir / "status.json", {"state": "finished", "epoch": self.epochs})
            atomic_write_json(run_dir / "final.json", {"test_nll": 7.5})
            (run_dir / "best.pt").write_bytes(b"model")
            return {"state": "finished", "test_nll": 7.5}
        finally:
            with self.lock:
                self.active -= 1


def config(**overrides):
    base = {"dataset": "bach", "hidden": 8, "init": "lae", "epochs": 2, "seed": 0}
    base.update(overrides)
    return base


@pytest.fixture
def runs_dir(tmp_path):
    return tmp_path / "runs"


def test_a_job_runs_in_the_background_and_leaves_a_run_folder(runs_dir):
    fake = FakeTrain(epochs=3)
    manager = jobs.JobManager(runs_dir, max_jobs=1, train_fn=fake)
    job = manager.submit(config(), session="alice")
    done = manager.wait(job.id, timeout=WAIT)

    assert done.state == jobs.FINISHED and done.error is None
    assert done.result == {"state": "finished", "test_nll": 7.5}
    assert done.fraction == 1.0
    assert job.run_dir.parent == runs_dir.resolve()
    assert "bach-h8-lae-s0" in job.run_dir.name
    assert jobs.read_json(job.run_dir / "config.json") == config()
    assert jobs.read_json(job.run_dir / "status.json")["state"] == "finished"
    assert [row["epoch"] for row in read_jsonl(job.run_dir / "metrics.jsonl")] == [1, 2, 3]


def test_training_never_runs_in_the_calling_thread(runs_dir):
    seen = []

    def train(config, run_dir, *, progress=None, cancel=None, resume=False):
        seen.append(threading.current_thread())
        return {}

    manager = jobs.JobManager(runs_dir, max_jobs=1, train_fn=train)
    manager.wait(manager.submit(config()).id, timeout=WAIT)
    assert seen and seen[0] is not threading.current_thread()


def test_concurrency_is_bounded_and_the_queue_is_fifo_with_positions(runs_dir):
    gate = threading.Event()
    fake = FakeTrain(gate=gate)
    manager = jobs.JobManager(runs_dir, max_jobs=1, train_fn=fake)
    first = manager.submit(config(seed=1), session="a")
    assert fake.started.acquire(timeout=WAIT)
    second = manager.submit(config(seed=2), session="b")
    third = manager.submit(config(seed=3), session="c")

    assert manager.get(first.id).state == jobs.RUNNING
    assert (manager.get(second.id).state, manager.get(third.id).state) == (jobs.QUEUED, jobs.QUEUED)
    assert manager.queue_position(first.id) is None
    assert manager.queue_position(second.id) == 1
    assert manager.queue_position(third.id) == 2
    assert manager.running_count == 1 and manager.queued_count == 2
    assert jobs.read_json(third.run_dir / "status.json")["state"] == "queued"

    gate.set()
    for job in (first, second, third):
        assert manager.wait(job.id, timeout=WAIT).state == jobs.FINISHED
    assert [c["config"]["seed"] for c in fake.calls] == [1, 2, 3]
    assert fake.max_active == 1


def test_two_slots_run_two_jobs_at_once(runs_dir):
    gate = threading.Event()
    fake = FakeTrain(gate=gate)
    manager = jobs.JobManager(runs_dir, max_jobs=2, train_fn=fake)
    submitted = [manager.submit(config(seed=s)) for s in range(3)]
    assert fake.started.acquire(timeout=WAIT) and fake.started.acquire(timeout=WAIT)
    assert manager.running_count == 2 and manager.queue_position(submitted[2].id) == 1
    gate.set()
    for job in submitted:
        manager.wait(job.id, timeout=WAIT)
    assert fake.max_active == 2


def test_cancel_a_queued_job_drops_it_without_running_it(runs_dir):
    gate = threading.Event()
    fake = FakeTrain(gate=gate)
    manager = jobs.JobManager(runs_dir, max_jobs=1, train_fn=fake)
    first = manager.submit(config(seed=1))
    assert fake.started.acquire(timeout=WAIT)
    waiting = manager.submit(config(seed=2))

    assert manager.cancel(waiting.id) is True
    assert manager.get(waiting.id).state == jobs.CANCELLED
    assert manager.queue_position(waiting.id) is None
    assert jobs.read_json(waiting.run_dir / "status.json")["state"] == "cancelled"
    gate.set()
    manager.wait(first.id, timeout=WAIT)
    assert [c["config"]["seed"] for c in fake.calls] == [1]
    assert manager.cancel(waiting.id) is False  # already done


def test_cancel_a_running_job_stops_it(runs_dir):
    fake = FakeTrain(gate=threading.Event())  # never opened: only cancel ends it
    manager = jobs.JobManager(runs_dir, max_jobs=1, train_fn=fake)
    job = manager.submit(config())
    assert fake.started.acquire(timeout=WAIT)
    assert manager.cancel(job.id)
    done = manager.wait(job.id, timeout=WAIT)
    assert done.state == jobs.CANCELLED and done.error is None
    assert jobs.read_json(job.run_dir / "status.json")["state"] == "cancelled"


@pytest.mark.parametrize(
    "failure, expected",
    [
        (LapMusicError("hidden size 0 is too small; choose at least 1"), "hidden size 0 is too small; choose at least 1"),
        (RuntimeError("boom"), "unexpected error (RuntimeError: boom)"),
    ],
)
def test_a_failing_job_records_its_error_and_the_manager_keeps_working(runs_dir, failure, expected):
    manager = jobs.JobManager(runs_dir, max_jobs=1, train_fn=FakeTrain(fail=failure))
    bad = manager.wait(manager.submit(config()).id, timeout=WAIT)
    assert bad.state == jobs.FAILED and bad.error == expected
    status = jobs.read_json(bad.run_dir / "status.json")
    assert status["state"] == "failed" and status["error"] == expected

    manager._train_fn = FakeTrain()  # the next job, in the same manager, succeeds
    good = manager.wait(manager.submit(config(seed=5)).id, timeout=WAIT)
    assert good.state == jobs.FINISHED
    assert manager.running_count == 0


def test_jobs_belong_to_their_browser_session(runs_dir):
    manager = jobs.JobManager(runs_dir, max_jobs=2, train_fn=FakeTrain(epochs=1))
    a1 = manager.submit(config(seed=1), session="a")
    b1 = manager.submit(config(seed=2), session="b")
    a2 = manager.submit(config(seed=3), session="a")
    for job in (a1, b1, a2):
        manager.wait(job.id, timeout=WAIT)
    assert [j.id for j in manager.jobs("a")] == [a1.id, a2.id]
    assert [j.id for j in manager.jobs("b")] == [b1.id]
    assert len(manager.jobs()) == 3
    assert len(jobs.list_runs(runs_dir, manager)) == 3  # every run on disk is listable by anyone


def test_the_same_run_folder_cannot_be_trained_twice_at_once(runs_dir):
    fake = FakeTrain(gate=threading.Event())
    manager = jobs.JobManager(runs_dir, max_jobs=1, train_fn=fake)
    job = manager.submit(config())
    with pytest.raises(LapMusicError, match="already running"):
        manager.submit(config(), run_dir=job.run_dir, resume=True)
    manager.shutdown()
    assert manager.get(job.id).state == jobs.CANCELLED


def test_resume_continues_the_existing_folder_and_keeps_its_config(runs_dir):
    manager = jobs.JobManager(runs_dir, max_jobs=1, train_fn=FakeTrain())
    first = manager.wait(manager.submit(config(epochs=2)).id, timeout=WAIT)
    fake = FakeTrain()
    manager._train_fn = fake
    resumed = manager.wait(manager.submit(config(epochs=4), run_dir=first.run_dir, resume=True).id, timeout=WAIT)
    assert resumed.run_dir == first.run_dir and fake.calls[0]["resume"] is True
    assert jobs.read_json(first.run_dir / "config.json")["epochs"] == 2  # train() owns the config on resume

    with pytest.raises(LapMusicError, match="not a run folder"):
        manager.submit(config(), run_dir=runs_dir / "nothing-here", resume=True)
    with pytest.raises(LapMusicError, match="needs the run folder"):
        manager.submit(config(), resume=True)


def test_after_a_restart_runs_are_listed_and_a_dead_running_run_is_interrupted(runs_dir):
    finished = runs_dir / "20260101-000000-bach-h8-lae-s0-aaaa"
    atomic_write_json(finished / "config.json", config())
    atomic_write_json(finished / "status.json", {"state": "finished"})
    atomic_write_json(finished / "final.json", {"test_nll": 7.0})
    (finished / "best.pt").write_bytes(b"x")

    died = runs_dir / "20260102-000000-jsb-h8-random-s0-bbbb"
    atomic_write_json(died / "config.json", config(dataset="jsb", init="random"))
    atomic_write_json(died / "status.json", {"state": "running", "epoch": 1})
    (died / "checkpoint.pt").write_bytes(b"x")
    (died / "metrics.jsonl").write_text('{"epoch": 0}\n{"epoch": 1}\n{"epoch": 2, "tr')  # killed mid-write

    nested = runs_dir / "compare" / "lae-s0"  # lapmusic compare writes one level deeper
    atomic_write_json(nested / "config.json", config())
    (runs_dir / "not-a-run").mkdir()

    fresh = jobs.JobManager(runs_dir, max_jobs=1, train_fn=FakeTrain())  # a new server process
    runs = {r.name: r for r in jobs.list_runs(manager=fresh)}
    assert set(runs) == {finished.name, died.name, "lae-s0"}
    assert runs[finished.name].state == jobs.FINISHED and runs[finished.name].final == {"test_nll": 7.0}
    assert runs[finished.name].has_model and not runs[finished.name].resumable
    assert runs[died.name].state == jobs.INTERRUPTED and runs[died.name].resumable
    assert runs[died.name].epochs_done == 1
    assert runs["lae-s0"].state == jobs.INTERRUPTED and not runs["lae-s0"].has_model


def test_list_runs_of_a_missing_folder_is_empty(tmp_path):
    assert jobs.list_runs(tmp_path / "absent") == []


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LAPMUSIC_MAX_JOBS", "3")
    monkeypatch.setenv("LAPMUSIC_RUNS_DIR", str(tmp_path / "r"))
    assert jobs.default_max_jobs() == 3
    manager = jobs.JobManager(train_fn=FakeTrain())
    assert manager.max_jobs == 3 and manager.runs_dir == tmp_path / "r"
    monkeypatch.setenv("LAPMUSIC_MAX_JOBS", "lots")
    assert jobs.default_max_jobs() == 1
    monkeypatch.setenv("LAPMUSIC_MAX_JOBS", "0")
    assert jobs.default_max_jobs() == 1
    monkeypatch.delenv("LAPMUSIC_MAX_JOBS")
    monkeypatch.delenv("LAPMUSIC_RUNS_DIR")
    assert jobs.default_max_jobs() == 1 and str(jobs.default_runs_dir()) == "runs"


def test_eta_extrapolates_progress():
    job = jobs.Job(id="x", run_dir=None, config={}, session=None, label="", group=None, resume=False)
    assert job.eta_seconds is None  # queued
    job.state, job.started_at, job.fraction = jobs.RUNNING, 100.0, 0.25
    job.finished_at = 130.0  # pretend 30 s elapsed
    assert job.elapsed == pytest.approx(30.0)
    assert job.eta_seconds == pytest.approx(90.0)
    job.finished_at = 101.0  # 1 s of history is not enough to extrapolate from
    assert job.eta_seconds is None


def test_run_folder_names_are_safe_for_user_datasets():
    name = jobs.run_folder_name(config(dataset="user:my songs/1"))
    assert "/" not in name and ":" not in name and " " not in name
    assert "user_my_songs_1-h8-lae-s0" in name


def test_one_browser_session_cannot_fill_the_queue(runs_dir):
    gate = threading.Event()
    manager = jobs.JobManager(runs_dir, max_jobs=1, max_per_session=2, train_fn=FakeTrain(gate=gate))
    first = [manager.submit(config(seed=s), session="eager") for s in (1, 2)]
    assert manager.slots_left("eager") == 0 and manager.slots_left("other") == 2
    with pytest.raises(LapMusicError, match="already have 2 runs queued or training"):
        manager.submit(config(seed=3), session="eager")
    other = manager.submit(config(seed=4), session="other")  # the rest of the class is not blocked
    assert manager.queue_position(other.id) == 2
    gate.set()
    for job in (*first, other):
        manager.wait(job.id, timeout=WAIT)
    assert manager.slots_left("eager") == 2
    manager.wait(manager.submit(config(seed=5), session="eager").id, timeout=WAIT)

    unlimited = jobs.JobManager(runs_dir, max_jobs=1, max_per_session=None, train_fn=FakeTrain(gate=threading.Event()))
    for seed in range(5):
        unlimited.submit(config(seed=10 + seed), session="eager")
    unlimited.shutdown()


def test_the_per_session_limit_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("LAPMUSIC_MAX_JOBS_PER_SESSION", raising=False)
    assert jobs.default_max_per_session() == 2
    monkeypatch.setenv("LAPMUSIC_MAX_JOBS_PER_SESSION", "4")
    assert jobs.default_max_per_session() == 4
    assert jobs.JobManager(max_jobs=1).max_per_session == 4
    monkeypatch.setenv("LAPMUSIC_MAX_JOBS_PER_SESSION", "0")
    assert jobs.default_max_per_session() is None
    monkeypatch.setenv("LAPMUSIC_MAX_JOBS_PER_SESSION", "many")
    assert jobs.default_max_per_session() == 2


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
    cache = jobs.DatasetCache(loader)
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
    cache = jobs.DatasetCache(loader)
    with pytest.raises(LapMusicError, match="could not download jsb"):
        cache.get("jsb")
    assert cache.get("jsb") == {"key": "jsb", "call": 2}


def test_jobs_take_their_data_from_the_shared_cache(runs_dir):
    loader = SlowLoader(fail_first=True)
    loader.gate.set()
    seen = []

    def train(config, run_dir, *, progress=None, cancel=None, resume=False, dataset=None):
        seen.append(dataset)
        return {}

    manager = jobs.JobManager(runs_dir, max_jobs=1, train_fn=train, datasets=jobs.DatasetCache(loader))
    failed = manager.wait(manager.submit(config(dataset="jsb")).id, timeout=WAIT)
    assert failed.state == jobs.FAILED and failed.error == "could not download jsb" and seen == []
    assert jobs.read_json(failed.run_dir / "status.json")["error"] == "could not download jsb"
    done = manager.wait(manager.submit(config(dataset="jsb")).id, timeout=WAIT)
    assert done.state == jobs.FINISHED and seen == [{"key": "jsb", "call": 2}]


def test_a_rebuilt_user_dataset_gets_a_new_token(monkeypatch, tmp_path):
    from lapmusic.data import Dataset, save_user_dataset

    monkeypatch.setenv("LAPMUSIC_CACHE_DIR", str(tmp_path))
    assert jobs.dataset_token("bach") == "bach"
    assert jobs.dataset_token("user:absent") == "user:absent"
    piece = [np.zeros((4, 88), dtype=np.uint8)]
    piece[0][:, 40] = 1
    save_user_dataset(Dataset("user:mine", "mine", piece, piece, piece))
    first = jobs.dataset_token("user:mine")
    path = tmp_path / "user" / "mine.npz"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert first.startswith("user:mine@") and jobs.dataset_token("user:mine") != first


def test_a_run_trained_by_another_process_is_not_called_interrupted(runs_dir):
    import time as clock

    manager = jobs.JobManager(runs_dir, max_jobs=1, train_fn=FakeTrain())
    live = runs_dir / "cli-run"
    atomic_write_json(live / "config.json", config())
    atomic_write_json(live / "status.json", {"state": "running", "epoch": 3, "updated": clock.time()})
    (live / "checkpoint.pt").write_bytes(b"x")
    summary = jobs.summarize_run(live, manager)
    assert summary.state == jobs.RUNNING and summary.elsewhere and not summary.resumable

    atomic_write_json(live / "status.json", {"state": "running", "epoch": 3,
                                              "updated": clock.time() - jobs.STALE_SECONDS - 1})
    summary = jobs.summarize_run(live, manager)
    assert summary.state == jobs.INTERRUPTED and not summary.elsewhere and summary.resumable


def test_the_managers_own_job_is_its_owner(runs_dir):
    gate = threading.Event()
    fake = FakeTrain(gate=gate)
    manager = jobs.JobManager(runs_dir, max_jobs=1, train_fn=fake)
    job = manager.submit(config())
    assert fake.started.acquire(timeout=WAIT)
    summary = jobs.summarize_run(job.run_dir, manager)
    assert summary.owner is manager.get(job.id) and not summary.elsewhere
    assert isinstance(jobs.read_json(job.run_dir / "status.json")["updated"], float)
    gate.set()
    manager.wait(job.id, timeout=WAIT)
    assert jobs.summarize_run(job.run_dir, manager).owner is None
