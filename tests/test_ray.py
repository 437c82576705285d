"""Ray as the engine, against a real local Ray (head on 127.0.0.1, 2 CPUs, one declared GPU, no dashboard):
``lapmusic sweep --engine ray`` gives the local engine's table, survives a killed Ray worker, requests its GPU
share; the app's job manager hands its runs to Ray with ``LAPMUSIC_RAY_ADDRESS``. One Ray for the module.

Skipped when Ray is not installed (``pip install 'lapmusic[ray]'``; ``scripts/setup.sh --test`` installs it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import random_rolls

from lapmusic.cli.main import main as cli_main
from lapmusic.core.errors import LapMusicError
from lapmusic.core.io import read_json, read_jsonl
from lapmusic.data.dataset import Dataset
from lapmusic.data.user import save_user_dataset
from lapmusic.jobs.limits import Quotas
from lapmusic.jobs.manager import JobManager
from lapmusic.jobs.rayexec import RayPool, choose_executor, task_options
from lapmusic.jobs.runs import CANCELLED, FINISHED, INTERRUPTED, QUEUED, RUNNING

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'lapmusic[ray]'")

HERE = Path(__file__).parent
WAIT = 60.0
PYTHONPATH = os.pathsep.join(filter(None, [str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH")]))
FAKE_ENV = {"LAPMUSIC_WORKER_TRAIN": "fake_train:train", "PYTHONPATH": PYTHONPATH}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    os.environ["PYTHONPATH"] = PYTHONPATH  # Ray's workers inherit it: they import lapmusic and the test helpers
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, _node_ip_address="127.0.0.1",
             object_store_memory=100 * 2**20, log_to_driver=False, configure_logging=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def until(predicate, timeout=WAIT, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def tiny_dataset():
    return save_user_dataset(Dataset(key="user:ray-test", name="ray-test",
                                     train=random_rolls(8, (8, 16), seed=0, density=0.15),
                                     valid=random_rolls(3, (8, 16), seed=1, density=0.15),
                                     test=random_rolls(3, (8, 16), seed=2, density=0.15)))


def grid_argv(out: Path, key: str, *extra) -> list[str]:
    return ["sweep", "--out", str(out), "--seeds", "0,1", "--progress-every", "5", "--base", f"dataset={key}",
            "hidden=6", "epochs=2", "batch_size=4", "bptt=8", "device=cpu", "init=random", *extra]


def table_body(out: Path) -> str:
    return (out / "sweep.md").read_text().split("\n\n", 1)[1]


# ------------------------------------------------------------------------------------------ sweeps
def test_ray_and_local_engines_give_the_same_table_and_a_rerun_skips(tmp_path, tiny_dataset):
    assert cli_main(grid_argv(tmp_path / "local", tiny_dataset, "--jobs", "2")) == 0
    assert cli_main(grid_argv(tmp_path / "ray", tiny_dataset, "--engine", "ray")) == 0
    assert table_body(tmp_path / "ray") == table_body(tmp_path / "local")
    rows = json.loads((tmp_path / "ray" / "sweep.json").read_text())["rows"]
    assert [r["seed"] for r in rows] == [0, 1] and not json.loads((tmp_path / "ray" / "sweep.json").read_text())["problems"]
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").glob("runs/*/final.json")}
    assert cli_main(grid_argv(tmp_path / "ray", tiny_dataset, "--engine", "ray")) == 0  # finished: nothing runs
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").glob("runs/*/final.json")} == stamps


def test_a_killed_ray_worker_costs_a_retry_from_the_checkpoint_not_the_run(tmp_path, tiny_dataset, monkeypatch):
    monkeypatch.setenv("LAPMUSIC_WORKER_TRAIN", "ray_kill_train:train")  # the engine hands LAPMUSIC_* to the task
    out = tmp_path / "grid"
    assert cli_main(["sweep", "--out", str(out), "--seeds", "0", "--engine", "ray", "--base", f"dataset={tiny_dataset}",
                     "hidden=6", "epochs=3", "batch_size=4", "bptt=8", "device=cpu", "init=random"]) == 0
    (run_dir,) = out.glob("runs/*")
    assert (out / f"killed-{run_dir.name}").exists()  # its Ray worker was killed once
    problems = json.loads((out / "sweep.json").read_text())["problems"]
    assert [(p["attempts"], p["outcome"]) for p in problems] == [(2, "finished")]
    assert "WorkerCrashedError" in problems[0]["error"] or "died" in problems[0]["error"]
    epochs = [r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl")]
    assert epochs == [0, 1, 2, 3]  # resumed after the checkpoint: no epoch lost, none twice


def test_a_run_asks_ray_for_its_cpu_and_fractional_gpu_share(tmp_path):
    assert task_options(1, 0.08) == {"num_cpus": 1, "num_gpus": 0.08, "max_retries": 0}
    with pytest.raises(LapMusicError, match="0 <= gpus <= 1"):
        task_options(1, 1.5)
    from lapmusic.jobs.rayexec import RayEngine

    engine = RayEngine(address=None, threads=1, gpus_per_run=0.25)  # joins the module's Ray: one declared GPU
    code = "import os, ray; print(os.environ.get('CUDA_VISIBLE_DEVICES'))"
    handles = [engine.submit([sys.executable, "-c", code], tmp_path / f"{n}.log") for n in range(4)]
    assert [engine.result(h) for h in handles] == [(0, None)] * 4  # ray.get: waits for each
    assert {(tmp_path / f"{n}.log").read_text().strip() for n in range(4)} == {"0"}  # Ray handed GPU 0 to each
    engine.close()  # joined, not started: Ray stays up
    assert ray.is_initialized()


# ------------------------------------------------------------------------------------------ the app's jobs
def manager_for(runs_dir, **kwargs):
    kwargs.setdefault("max_jobs", 1)
    kwargs.setdefault("quotas", Quotas(per_session=None, per_client=None))
    return JobManager(runs_dir, worker_env=FAKE_ENV, cuda=False, **kwargs)


def config(**overrides):
    return {"dataset": "fake", "hidden": 8, "init": "lae", "epochs": 2, "seed": 0, **overrides}


def test_unset_the_app_keeps_its_local_workers(monkeypatch):
    monkeypatch.delenv("LAPMUSIC_RAY_ADDRESS", raising=False)
    assert type(choose_executor(threads=1, gpus=0)).__name__ == "WorkerPool"
    monkeypatch.setenv("LAPMUSIC_RAY_ADDRESS", "local")
    monkeypatch.setenv("LAPMUSIC_RAY_GPUS_PER_RUN", "lots")
    with pytest.raises(LapMusicError, match="LAPMUSIC_RAY_GPUS_PER_RUN must be a number"):
        choose_executor(threads=1, gpus=0)


def test_the_app_queues_shares_and_cancels_runs_on_ray(tmp_path, monkeypatch, local_ray):
    monkeypatch.setenv("LAPMUSIC_RAY_ADDRESS", local_ray)
    gate = tmp_path / "gate"
    manager = manager_for(tmp_path / "runs")
    try:
        assert isinstance(manager.scheduler.pool, RayPool)
        first = manager.submit(config(gate=str(gate), pid_file=str(tmp_path / "pid.json")), session="a")
        second = manager.submit(config(seed=1), session="a")
        assert manager.submit(config(seed=1), session="b").id == second.id  # one run, two followers
        until(lambda: (tmp_path / "pid.json").is_file(), what="the first run's worker on Ray")
        assert manager.get(first.id).state == RUNNING and manager.get(second.id).state == QUEUED
        assert manager.cancel(first.id, "a") == "stopping"  # the cancel file, read by the worker
        assert manager.wait(first.id, timeout=WAIT).state == CANCELLED
        assert manager.wait(second.id, timeout=WAIT).state == FINISHED
        assert [r["epoch"] for r in read_jsonl(second.run_dir / "metrics.jsonl")] == [1, 2]
    finally:
        manager.close(requeue=False)


KILLED_SERVER = r"""
import json, sys, time
from lapmusic.jobs.limits import Quotas
from lapmusic.jobs.manager import JobManager

manager = JobManager(sys.argv[1], max_jobs=1, cuda=False, quotas=Quotas(None, None), worker_env=json.loads(sys.argv[3]))
job = manager.submit(json.loads(sys.argv[2]), session="a")
while not (manager.get(job.id).run_dir / "checkpoint.pt").exists():
    time.sleep(0.05)
print(json.dumps(job.id), flush=True)
time.sleep(600)  # until the test kills this server
"""


def test_a_killed_server_on_ray_resumes_its_run_after_the_restart(tmp_path, local_ray):
    gate = tmp_path / "gate"
    gate.write_text("1")  # epoch 1 (a checkpoint), then wait in epoch 2
    runs_dir = tmp_path / "runs"
    env = dict(os.environ, PYTHONPATH=PYTHONPATH, LAPMUSIC_RAY_ADDRESS=local_ray)
    server = subprocess.Popen([sys.executable, "-c", KILLED_SERVER, str(runs_dir),
                               json.dumps(config(epochs=3, gate=str(gate))), json.dumps(FAKE_ENV)],
                              env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        while line and not line.startswith('"'):
            line = server.stdout.readline()
        job_id = json.loads(line)
        server.send_signal(signal.SIGKILL)  # Ray ends the dead driver's task; its worker dies with it
        server.wait(WAIT)
        os.environ["LAPMUSIC_RAY_ADDRESS"] = local_ray
        try:
            until(lambda: read_json(runs_dir / job_id / "worker.json").get("exited") is not None
                  or not _pid_alive(read_json(runs_dir / job_id / "worker.json")["pid"]), what="the worker's end")
            second = manager_for(runs_dir)
            try:
                assert second.get(job_id).state == INTERRUPTED  # resumable from its checkpoint
                gate.write_text("")
                resumed = second.submit(None, run_dir=runs_dir / job_id, resume=True, session="a")
                assert second.wait(resumed.id, timeout=WAIT).state == FINISHED
            finally:
                second.close(requeue=False)
        finally:
            del os.environ["LAPMUSIC_RAY_ADDRESS"]
        epochs = [r["epoch"] for r in read_jsonl(runs_dir / job_id / "metrics.jsonl")]
        assert epochs == [1, 2, 3]
    finally:
        gate.write_text("")
        if server.poll() is None:
            server.kill()
            server.wait()


def _pid_alive(pid) -> bool:
    from lapmusic.jobs.worker import pid_alive

    return pid_alive(pid)


STARTED_FROM_A_THREAD = r"""
import threading, time, ray
from lapmusic.jobs.rayexec import connect

thread = threading.Thread(target=connect, args=("local",), kwargs={"cpus": 1})
thread.start()
thread.join()  # as a Streamlit script thread ends after its rerun
time.sleep(3)
print(ray.get(ray.remote(lambda: "alive").remote()), flush=True)
ray.shutdown()
"""


def test_a_local_ray_started_from_a_passing_thread_outlives_it(tmp_path):
    # Ray kills the processes it starts when the starting thread ends (PR_SET_PDEATHSIG): the app's server
    # starts it from a Streamlit script thread, so connect() starts it from a thread of its own.
    done = subprocess.run([sys.executable, "-c", STARTED_FROM_A_THREAD], capture_output=True, text=True,
                          timeout=240, env=dict(os.environ, PYTHONPATH=PYTHONPATH), cwd=tmp_path)
    assert done.stdout.strip().splitlines()[-1:] == ["alive"], done.stderr[-2000:]
