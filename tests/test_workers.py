"""The job manager with real worker processes (``python -m lapmusic.jobs.worker``) running a fake training
function (tests/fake_train.py: no torch, a few ms per epoch), plus one real tiny training.

Waits use generous timeouts only; nothing asserts how fast anything is.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lapmusic.core.errors import LapMusicError
from lapmusic.core.io import atomic_write_json, read_json, read_jsonl
from lapmusic.jobs import worker
from lapmusic.jobs.limits import Quotas
from lapmusic.jobs.manager import JobManager
from lapmusic.jobs.runs import CANCELLED, FAILED, FINISHED, INTERRUPTED, QUEUED, RUNNING, summarize_run

WAIT = 30.0
HERE = Path(__file__).parent
# The caller's PYTHONPATH stays behind ours (scripts/gpu_check.sh carries packages there).
FAKE_ENV = {"LAPMUSIC_WORKER_TRAIN": "fake_train:train",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH")]))}


def config(tmp_path, **overrides):
    base = {"dataset": "fake", "hidden": 8, "init": "lae", "epochs": 2, "seed": 0}
    base.update(overrides)
    return base


def manager_for(runs_dir, **kwargs):
    kwargs.setdefault("max_jobs", 1)
    kwargs.setdefault("quotas", Quotas(per_session=None, per_client=None))
    return JobManager(runs_dir, worker_env=FAKE_ENV, cuda=False, **kwargs)


def until(predicate, timeout=WAIT, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def runs_dir(tmp_path):
    return tmp_path / "runs"


@pytest.fixture
def managers():
    made = []
    yield made
    for manager in made:
        manager.close(requeue=False)


def test_a_job_trains_in_a_separate_process_and_leaves_a_run_folder(runs_dir, tmp_path, managers):
    manager = manager_for(runs_dir)
    managers.append(manager)
    job = manager.submit(config(tmp_path, pid_file=str(tmp_path / "pid.json")), session="s1")
    done = manager.wait(job.id, timeout=WAIT)
    assert done.state == FINISHED
    assert read_json(tmp_path / "pid.json")["pid"] != os.getpid()
    assert [r["epoch"] for r in read_jsonl(job.run_dir / "metrics.jsonl")] == [1, 2]
    assert read_json(job.run_dir / "worker.json")["outcome"] == "finished"
    assert summarize_run(job.run_dir, manager).state == FINISHED
    assert read_json(job.run_dir / "job.json")["sessions"].keys() == {"s1"}


def test_slots_bound_the_workers_and_the_queue_is_fifo(runs_dir, tmp_path, managers):
    gate = tmp_path / "gate"
    manager = manager_for(runs_dir, max_jobs=2)
    managers.append(manager)
    submitted = [manager.submit(config(tmp_path, seed=s, gate=str(gate))) for s in range(4)]
    until(lambda: manager.running_count == 2, what="two running")
    assert [manager.queue_position(j.id) for j in submitted] == [None, None, 1, 2]
    assert [manager.get(j.id).state for j in submitted] == ["running", "running", "queued", "queued"]
    estimates = manager.estimates()
    assert estimates[submitted[2].id]["position"] == 1 and estimates[submitted[3].id]["position"] == 2
    assert 0 < estimates[submitted[2].id]["start_in"] <= estimates[submitted[3].id]["start_in"]
    gate.write_text("")
    for job in submitted:
        assert manager.wait(job.id, timeout=WAIT).state == FINISHED


def test_identical_settings_share_one_run(runs_dir, tmp_path, managers):
    gate = tmp_path / "gate"
    manager = manager_for(runs_dir, quotas=Quotas(per_session=1, per_client=None))
    managers.append(manager)
    first = manager.submit(config(tmp_path, gate=str(gate)), session="a")
    others = [manager.submit(config(tmp_path, gate=str(gate)), session=f"s{n}") for n in range(29)]
    assert all(o is first for o in others)  # thirty presses, one run
    assert len(list(runs_dir.iterdir())) == 2  # the run and .lapmusic
    assert manager.slots_left("a") == 0 and manager.slots_left("s0") == 1  # attaching is free
    different = manager.submit(config(tmp_path, gate=str(gate), seed=1), session="s0")
    assert different is not first
    gate.write_text("")
    manager.wait(first.id, timeout=WAIT)
    again = manager.submit(config(tmp_path, gate=str(gate)), session="late")  # a finished run is shared too
    assert again is first and again.state == FINISHED
    assert {j.id for j in manager.jobs("late")} == {first.id}


def running_shared_job(runs_dir, tmp_path, managers):
    """A manager and a running job (held at a gate that never opens) followed by sessions "a" and "b"."""
    manager = manager_for(runs_dir)
    managers.append(manager)
    job = manager.submit(config(tmp_path, gate=str(tmp_path / "never")), session="a")
    manager.submit(config(tmp_path, gate=str(tmp_path / "never")), session="b")
    until(lambda: manager.get(job.id).state == RUNNING, what="running")
    return manager, job


def test_stop_unfollows_a_shared_run_and_the_last_follower_stops_it(runs_dir, tmp_path, managers):
    manager, job = running_shared_job(runs_dir, tmp_path, managers)
    with pytest.raises(LapMusicError, match="someone else"):
        manager.cancel(job.id, "stranger")
    assert manager.cancel(job.id, "a") == "unfollowed" and manager.get(job.id).state == RUNNING
    assert manager.cancel(job.id, "b") == "stopping"
    done = manager.wait(job.id, timeout=WAIT)
    assert done.state == CANCELLED
    assert (job.run_dir / "checkpoint.pt").is_file() is False  # stopped before its first epoch


def test_the_teacher_stops_any_run(runs_dir, tmp_path, managers):
    manager, job = running_shared_job(runs_dir, tmp_path, managers)
    assert manager.cancel(job.id, "teacher-session", teacher=True) == "stopping"
    assert manager.wait(job.id, timeout=WAIT).state == CANCELLED


def test_a_failing_worker_records_its_error(runs_dir, tmp_path, managers):
    manager = manager_for(runs_dir)
    managers.append(manager)
    job = manager.wait(manager.submit(config(tmp_path, fail="the data is bad; choose another")).id, timeout=WAIT)
    assert job.state == FAILED and job.error == "the data is bad; choose another"
    assert read_json(job.run_dir / "status.json")["error"] == "the data is bad; choose another"


def test_a_killed_worker_is_recognised_within_seconds_and_resumable(runs_dir, tmp_path, managers):
    gate = tmp_path / "gate"
    manager = manager_for(runs_dir)
    managers.append(manager)
    job = manager.submit(config(tmp_path, epochs=3, gate=str(gate), pid_file=str(tmp_path / "pid.json")))
    until(lambda: (tmp_path / "pid.json").is_file(), what="worker start")
    # Let epoch 1 through (a checkpoint), hold the worker in epoch 2 and kill it.
    gate.write_text("1")
    until(lambda: (job.run_dir / "checkpoint.pt").is_file(), what="first checkpoint")
    os.kill(read_json(tmp_path / "pid.json")["pid"], signal.SIGKILL)
    until(lambda: summarize_run(job.run_dir, manager).state == INTERRUPTED, timeout=10,
          what="interrupted within 10 s")
    until(lambda: manager.get(job.id).state == INTERRUPTED, timeout=10, what="manager notices")
    summary = summarize_run(job.run_dir, manager)
    assert summary.resumable
    gate.write_text("")
    resumed = manager.submit(None, run_dir=job.run_dir, resume=True, session="a")
    assert manager.wait(resumed.id, timeout=WAIT).state == FINISHED
    assert read_json(tmp_path / "pid.json")["resume"] is True
    epochs = [r["epoch"] for r in read_jsonl(job.run_dir / "metrics.jsonl")]
    assert epochs[-1] == 3 and len(set(epochs)) == len(epochs)


def test_a_worker_killed_before_its_first_checkpoint_is_requeued_not_interrupted(runs_dir, tmp_path, managers):
    gate = tmp_path / "gate"
    manager = manager_for(runs_dir)
    managers.append(manager)
    job = manager.submit(config(tmp_path, gate=str(gate), pid_file=str(tmp_path / "pid.json")))
    until(lambda: (tmp_path / "pid.json").is_file(), what="worker start")
    first_pid = read_json(tmp_path / "pid.json")["pid"]
    os.kill(first_pid, signal.SIGKILL)
    until(lambda: (read_json(tmp_path / "pid.json") or {}).get("pid") not in (None, first_pid),
          what="a second worker")
    gate.write_text("")
    assert manager.wait(job.id, timeout=WAIT).state == FINISHED
    assert read_json(job.run_dir / "job.json")["attempts"] == 1


KILLED_SERVER = r"""
import json, sys, time
from lapmusic.jobs.limits import Quotas
from lapmusic.jobs.manager import JobManager

runs_dir, configs, env = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
manager = JobManager(runs_dir, max_jobs=1, cuda=False, quotas=Quotas(None, None), worker_env=env)
jobs = [manager.submit(c, session="a", group="g1" if n == 0 else None) for n, c in enumerate(configs)]
deadline = time.monotonic() + 60
while manager.get(jobs[0].id).state != "running":
    if time.monotonic() > deadline:
        sys.exit("the first job did not start")
    time.sleep(0.05)
print(json.dumps([j.id for j in jobs]), flush=True)
time.sleep(600)  # until the test kills this server
"""


def test_a_restart_keeps_the_queue_in_order_and_adopts_a_live_worker(runs_dir, tmp_path, managers):
    gate = tmp_path / "gate"
    configs = [config(tmp_path, seed=s, gate=str(gate)) for s in (0, 1, 2, 3)]
    first = subprocess.Popen([sys.executable, "-c", KILLED_SERVER, str(runs_dir), json.dumps(configs),
                              json.dumps(FAKE_ENV)], env=dict(os.environ, PYTHONPATH=FAKE_ENV["PYTHONPATH"]),
                             stdout=subprocess.PIPE, text=True)
    try:
        line = first.stdout.readline()
        while line and not line.startswith("["):  # a library may print on import (pyfluidsynth does when CI is set)
            line = first.stdout.readline()
        assert line, "the first server did not start its first job"
        running, *queued = json.loads(line)
        first.send_signal(signal.SIGKILL)  # the server dies without cleaning up; its worker lives on
        first.wait(WAIT)

        second = manager_for(runs_dir)
        managers.append(second)
        assert [second.queue_position(job_id) for job_id in queued] == [1, 2, 3]
        assert second.get(running).state == RUNNING  # adopted, not interrupted
        assert read_json(runs_dir / running / "job.json")["attempts"] == 0  # no worker death recorded
        assert summarize_run(runs_dir / running, second).state == RUNNING
        assert {j.id for j in second.jobs("a")} == {running, *queued}  # the session's runs
        assert second.get(running).group_of("a") == "g1"
        gate.write_text("")
        for job_id in [running, *queued]:
            assert second.wait(job_id, timeout=WAIT).state == FINISHED
    finally:
        gate.write_text("")  # a worker left waiting at the gate ends
        if first.poll() is None:
            first.kill()
            first.wait()


def test_a_clean_shutdown_requeues_running_runs_at_the_front(runs_dir, tmp_path, managers):
    gate = tmp_path / "gate"
    first = manager_for(runs_dir)
    running = first.submit(config(tmp_path, epochs=3, gate=str(gate)))
    waiting = first.submit(config(tmp_path, seed=1, gate=str(gate)))
    until(lambda: first.get(running.id).state == RUNNING, what="running")
    first.close()
    assert read_json(running.run_dir / "status.json")["state"] == QUEUED
    second = manager_for(runs_dir, start=False)
    managers.append(second)
    assert [second.queue_position(running.id), second.queue_position(waiting.id)] == [1, 2]


def test_a_second_server_on_the_same_runs_folder_only_reads(runs_dir, tmp_path, managers):
    first = manager_for(runs_dir)
    managers.append(first)
    second = manager_for(runs_dir)
    managers.append(second)
    assert first.owner and not second.owner
    with pytest.raises(LapMusicError, match="another lapmusic server"):
        second.submit(config(tmp_path))


def test_worker_state_needs_a_fresh_heartbeat_and_a_live_pid(tmp_path):
    assert worker.worker_state(tmp_path) is None
    worker.write_worker_file(tmp_path, os.getpid())
    assert worker.worker_state(tmp_path) == "alive"
    # A live worker on this host silent for longer than STALE_SECONDS (a LAPACK call holding the GIL blocks
    # its heartbeat thread) is still alive; only a silence past STALL_SECONDS means hung.
    assert worker.worker_state(tmp_path, now=time.time() + worker.STALE_SECONDS + 1) == "alive"
    assert worker.worker_state(tmp_path, now=time.time() + worker.STALL_SECONDS + 1) == "dead"
    info = json.loads((tmp_path / worker.WORKER_FILE).read_text())
    (tmp_path / worker.WORKER_FILE).write_text(json.dumps({**info, "host": "another-host"}))
    assert worker.worker_state(tmp_path) == "alive"
    assert worker.worker_state(tmp_path, now=time.time() + worker.STALE_SECONDS + 1) == "dead"
    worker.write_worker_file(tmp_path, 2**22 + 12345)  # no such pid
    assert worker.worker_state(tmp_path) == "dead"
    worker.write_worker_file(tmp_path, os.getpid(), exited=time.time())
    assert worker.worker_state(tmp_path) == "dead"


def test_live_worker_gives_the_file_of_a_live_worker_only(tmp_path):
    assert worker.live_worker(tmp_path) is None
    worker.write_worker_file(tmp_path, os.getpid())
    assert worker.live_worker(tmp_path)["pid"] == os.getpid()  # what a restarted server adopts
    worker.write_worker_file(tmp_path, os.getpid(), exited=time.time())
    assert worker.live_worker(tmp_path) is None
    worker.write_worker_file(tmp_path, 2**22 + 12345)
    assert worker.live_worker(tmp_path) is None


def test_the_worker_refuses_a_folder_without_config(tmp_path, capsys):
    assert worker.main([str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_a_worker_refused_by_the_folder_lock_leaves_the_owners_status_alone(tmp_path):
    from lapmusic.training.config import TrainConfig

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    atomic_write_json(run_dir / "config.json", TrainConfig(dataset="jsb", epochs=1).to_dict())
    owner_status = {"state": "running", "epoch": 3, "message": "trained by the command line", "error": None}
    atomic_write_json(run_dir / "status.json", owner_status)
    env = dict(os.environ, PYTHONPATH=FAKE_ENV["PYTHONPATH"])  # the real train(), this checkout first
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom lapmusic.core.lock import run_lock\n"
         "with run_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n", str(run_dir)],
        env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        done = subprocess.run([sys.executable, "-m", "lapmusic.jobs.worker", str(run_dir)], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 1
    assert "being written by another lapmusic process" in done.stderr
    assert read_json(run_dir / "status.json") == owner_status


def test_a_real_tiny_training_in_a_worker(runs_dir, tmp_path, monkeypatch, make_rolls, managers):
    """The real lapmusic.training.train in a worker process, with a tiny user dataset, resumed after a stop."""
    from lapmusic.data.dataset import Dataset
    from lapmusic.data.user import save_user_dataset

    monkeypatch.setenv("LAPMUSIC_CACHE_DIR", str(tmp_path / "cache"))
    rolls = make_rolls(6, 12)
    key = save_user_dataset(Dataset("user:tiny", "tiny", rolls[:4], rolls[4:5], rolls[5:]))
    manager = JobManager(runs_dir, max_jobs=1, cuda=False, quotas=Quotas(per_session=None, per_client=None))
    managers.append(manager)
    job = manager.submit({**_tiny_config(), "dataset": key}, session="a")
    done = manager.wait(job.id, timeout=120)
    assert done.state == FINISHED, (job.run_dir / "worker.log").read_text()[-2000:]
    assert read_json(job.run_dir / "final.json")["epochs"] >= 1
    assert np.isfinite(read_jsonl(job.run_dir / "metrics.jsonl")[-1]["valid_nll"])


def _tiny_config() -> dict:
    from lapmusic.training.config import TrainConfig

    return TrainConfig.from_settings(dict(hidden=4, init="lae", epochs=1, batch_size=4, device="cpu", readout_steps=0,
                       patience=None)).to_dict()


def test_resume_right_after_a_stop_waits_for_the_exiting_worker(runs_dir, tmp_path, managers):
    gate = tmp_path / "gate"
    manager = manager_for(runs_dir, start=False)  # no scheduler thread: the test decides when workers are noticed
    managers.append(manager)
    job = manager.submit(config(tmp_path, epochs=3, gate=str(gate)), session="a")
    manager.scheduler.tick()
    gate.write_text("1")
    until(lambda: (job.run_dir / "checkpoint.pt").is_file(), what="a checkpoint")
    manager.cancel(job.id, "a")
    until(lambda: read_json(job.run_dir / "status.json")["state"] == "cancelled", what="cancelled on disk")
    assert manager.get(job.id).state == RUNNING  # the scheduler has not looked yet
    resumed = manager.submit(None, run_dir=job.run_dir, resume=True, session="a")
    assert resumed.state == QUEUED and manager.queue_position(job.id) == 1


SERVER_EXIT = r"""
import sys, time, json
from pathlib import Path
import torch  # the server imports torch too (sidebar, samples)
from lapmusic.jobs.limits import Quotas
from lapmusic.jobs.manager import JobManager
manager = JobManager(sys.argv[1], max_jobs=1, cuda=False, quotas=Quotas(None, None))
job = manager.submit(json.loads(sys.argv[2]), session="a")
deadline = time.monotonic() + 120
while not (job.run_dir / "metrics.jsonl").is_file() and time.monotonic() < deadline:
    time.sleep(0.1)
torch.ones(256, 256) @ torch.ones(256, 256)
print("exiting while training", job.run_dir, flush=True)
sys.exit(0)  # like Ctrl-C of streamlit: the interpreter exits, atexit runs
"""


def test_the_server_exits_cleanly_while_a_run_trains(runs_dir, tmp_path, make_rolls):
    """At exit the server stops its worker, re-queues the run and exits quietly: no 'terminate called
    without an active exception' from a training thread."""

    from lapmusic.data.dataset import Dataset
    from lapmusic.data.user import save_user_dataset

    env = dict(os.environ, LAPMUSIC_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")])))
    os.environ["LAPMUSIC_CACHE_DIR"], old = env["LAPMUSIC_CACHE_DIR"], os.environ.get("LAPMUSIC_CACHE_DIR")
    try:
        rolls = make_rolls(8, 40)
        key = save_user_dataset(Dataset("user:tiny", "tiny", rolls[:6], rolls[6:7], rolls[7:]))
    finally:
        os.environ["LAPMUSIC_CACHE_DIR"] = old or ""
    config = {**_tiny_config(), "dataset": key, "init": "random", "epochs": 1000, "patience": None}
    done = subprocess.run([sys.executable, "-c", SERVER_EXIT, str(runs_dir), json.dumps(config)], env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "exiting while training" in done.stdout
    assert "terminate called" not in done.stderr
    run_dir = Path(done.stdout.split()[-1])
    assert read_json(run_dir / "status.json")["state"] == "queued"  # back at the front of the queue
    assert read_json(runs_dir / ".lapmusic" / "queue.json")["queue"][0]["run"] == run_dir.name
    assert worker.worker_state(run_dir) == "dead"
