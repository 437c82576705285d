"""The process side of the job manager: worker slots, starting workers, noticing how they ended.

:class:`WorkerSupervisor` is a mixin of :class:`lapmusic.jobs.JobManager`; it uses the manager's
``_lock``, ``_jobs``, ``_queue``, ``_stop``, ``_wake``, ``_thread``, ``_lock_fd``, ``owner``, ``max_jobs``,
``gpus``, ``threads_per_worker``, ``worker_env`` and its ``_write_status`` / ``_save_job`` / ``_index``.
A supervisor thread calls :meth:`tick` every ``TICK_SECONDS``: a worker that ended (``Popen.poll``, or for a
worker adopted after a restart: its pid and heartbeat) is recorded, and queued jobs start while slots are free.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from lapmusic.core.io import read_json
from lapmusic.jobs.job import Job
from lapmusic.jobs.runs import CANCELLED, DONE_STATES, FAILED, INTERRUPTED, QUEUED, RUNNING
from lapmusic.jobs.worker import CANCEL_FILE, live_worker, pid_alive, worker_state, write_worker_file

log = logging.getLogger(__name__)

TICK_SECONDS = 0.5
MAX_ATTEMPTS = 3
"""A job whose worker dies before its first checkpoint is re-queued; after this many deaths it fails."""


def _env_int(name: str, default: int | None) -> int | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        log.warning("ignoring %s=%r (not an integer)", name, text)
        return default


def cuda_devices() -> int:
    """Number of CUDA GPUs (0 without CUDA or without torch)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken CUDA setup means CPU
        return 0


def default_max_jobs() -> int:
    """``$LAPMUSIC_MAX_JOBS``, else one slot per GPU, else ``cpu_count // 2`` (at least 1): a training
    step uses about two cores well, and the server keeps some for the pages."""
    value = _env_int("LAPMUSIC_MAX_JOBS", None)
    if value is not None:
        return max(1, value)
    gpus = cuda_devices()
    return gpus if gpus else max(1, (os.cpu_count() or 1) // 2)


class WorkerSupervisor:
    """Worker processes for the job manager (see the module docstring for what it needs from it)."""

    def close(self, requeue: bool = True, timeout: float = 5.0) -> None:
        """Stop the supervisor and this server's workers (a clean shutdown). With ``requeue`` their runs go
        back to the front of the queue, to continue from their checkpoints on the next start."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        with self._lock:
            mine = [j for j in self._jobs.values() if j.state == RUNNING and j.proc is not None]
            for job in mine:
                try:
                    (job.run_dir / CANCEL_FILE).touch()
                except OSError:
                    pass
        deadline = time.monotonic() + timeout
        for job in mine:
            try:
                job.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                continue  # it stops by itself at its next batch; the run is resumable then
            with self._lock:
                status = read_json(job.run_dir / "status.json") or {}
                if requeue and self.owner and status.get("state") in (CANCELLED, RUNNING):
                    job.state = QUEUED
                    self._write_status(job, state=QUEUED, error=None, message="re-queued: the server stopped")
                    self._queue.append(job.run_dir, job.submitted_at, front=True)
                else:
                    job.state = str(status.get("state") or INTERRUPTED)
        try:
            os.close(self._lock_fd)
        except OSError:
            pass

    shutdown = close

    # ----------------------------------------------------------------------------- the supervisor
    def _supervise(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the supervisor must survive a bad run folder
                log.exception("job supervisor")
            self._wake.wait(TICK_SECONDS)
            self._wake.clear()

    def tick(self) -> None:
        """One round: notice ended workers, start queued jobs in free slots."""
        with self._lock:
            if self._stop.is_set():
                return
            for job in [j for j in self._jobs.values() if j.state == RUNNING]:
                if job.proc is not None:
                    alive = job.proc.poll() is None
                else:  # adopted after a restart: not our child
                    alive = worker_state(job.run_dir) == "alive" and (job.pid is None or pid_alive(job.pid))
                if not alive:
                    self._ended(job)
            while len(self._queue) and self.running_count < self.max_jobs:
                run_dir = self._queue.pop()
                job = self._jobs.get(run_dir)
                if job is None or job.state != QUEUED or not run_dir.is_dir():
                    continue
                if (info := live_worker(run_dir)) is not None:  # a worker of a previous server is still on it
                    job.state, job.pid = RUNNING, info.get("pid")
                    continue
                self._start(job)

    def _start(self, job: Job) -> None:
        try:
            (job.run_dir / CANCEL_FILE).unlink()
        except FileNotFoundError:
            pass
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        env["LAPMUSIC_WORKER_THREADS"] = str(self.threads_per_worker)
        env.setdefault("OMP_NUM_THREADS", str(self.threads_per_worker))
        if self.gpus:
            busy = {j.gpu for j in self._jobs.values() if j.state == RUNNING}
            job.gpu = next((g for g in range(self.gpus) if g not in busy), 0)
            env["CUDA_VISIBLE_DEVICES"] = str(job.gpu)
        env.update(self.worker_env)
        try:
            with open(job.run_dir / "worker.log", "ab") as log_file:
                job.proc = subprocess.Popen(
                    [sys.executable, "-m", "lapmusic.jobs.worker", str(job.run_dir)],
                    stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                    cwd=str(job.run_dir), start_new_session=True, close_fds=True,
                )
        except OSError as exc:
            job.state, job.error = FAILED, f"could not start a worker process ({exc})"
            self._write_status(job, state=FAILED, error=job.error, message="failed")
            return
        job.pid, job.state, job.started_at, job.stopping = job.proc.pid, RUNNING, time.time(), False
        write_worker_file(job.run_dir, job.proc.pid)  # alive from now on, before the worker's first beat
        self._write_status(job, state=RUNNING, error=None, message="starting a worker")

    def _reap(self, job: Job, timeout: float = 10.0) -> None:
        if job.proc is not None:
            try:
                job.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return
            self._ended(job)

    def _ended(self, job: Job) -> None:
        """A worker is gone: record how its run ended."""
        status = read_json(job.run_dir / "status.json") or {}
        state = status.get("state")
        job.proc, job.pid, job.finished_at = None, None, time.time()
        if state in DONE_STATES:
            job.state, job.error = state, status.get("error") if state == FAILED else None
        else:
            self._worker_gone(job, requeue=None)
        self._index(job)

    def _worker_gone(self, job: Job, requeue: list | None) -> None:
        """The worker died without a final word (killed): resumable, or re-queued without a checkpoint."""
        if (job.run_dir / "checkpoint.pt").is_file():
            job.state = INTERRUPTED
            return
        job.attempts += 1
        self._save_job(job)
        if job.attempts >= MAX_ATTEMPTS:
            job.state = FAILED
            job.error = (f"its worker stopped {job.attempts} times before the first checkpoint; "
                         f"see {job.run_dir / 'worker.log'}")
            self._write_status(job, state=FAILED, error=job.error, message="failed")
            return
        job.state = QUEUED
        self._write_status(job, state=QUEUED, error=None, message="re-queued: its worker stopped before the first "
                           "checkpoint")
        if requeue is not None:
            requeue.append(job)
        else:
            self._queue.append(job.run_dir, job.submitted_at, front=True)
