"""The job manager's scheduler: queued jobs into worker slots, how workers ended, restarts and shutdown.

A thread calls :meth:`Scheduler.tick` every ``TICK_SECONDS`` (sooner when woken): a worker that ended is
recorded (its run finished, failed, was cancelled, or died and is interrupted or re-queued), and queued jobs
start while fewer than ``max_jobs`` run.

After a restart, :meth:`Scheduler.recover` rebuilds the jobs from the run folders: queued runs keep their
order, a worker that outlived the previous server (killed) is adopted, and a run whose worker died is
interrupted and resumable from its checkpoint, or re-queued at the front when it had none (at most
:data:`~lapmusic.jobs.job.MAX_ATTEMPTS` times). :meth:`Scheduler.stop` is the clean shutdown: it stops this
server's workers and re-queues their runs at the front, to continue on the next start.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from lapmusic.core.io import read_json
from lapmusic.jobs.job import Job
from lapmusic.jobs.pool import Executor
from lapmusic.jobs.queue import PersistentQueue
from lapmusic.jobs.runs import CANCELLED, FAILED, INTERRUPTED, QUEUED, RUNNING, candidate_dirs
from lapmusic.jobs.table import JobTable
from lapmusic.jobs.worker import live_worker

log = logging.getLogger(__name__)

TICK_SECONDS = 0.5


class Scheduler:
    """Runs the jobs of ``table`` in ``pool`` (local processes or Ray tasks), in the order of ``queue``, at most ``max_jobs`` at once.

    Every method takes ``lock`` (the job manager's) while it reads or changes the table, the queue or the pool.
    """

    def __init__(self, table: JobTable, queue: PersistentQueue, pool: Executor, lock: threading.RLock,
                 max_jobs: int):
        self.table, self.queue, self.pool, self.lock, self.max_jobs = table, queue, pool, lock, max_jobs
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def recover(self, runs_dir: Path, owner: bool) -> None:
        """Rebuild the jobs and the queue from ``runs_dir`` after a restart. As the ``owner`` of the folder,
        adopt live workers and record the runs whose workers died; otherwise only read."""
        front: list[Path] = []
        with self.lock:
            for run_dir in candidate_dirs(runs_dir):
                job = Job.from_folder(run_dir)
                if job is None:
                    continue  # a run of the lapmusic command: listed by the pages, not managed here
                if job.state == RUNNING:
                    if (worker := live_worker(job.run_dir)) is not None:
                        job.started_at = time.time()
                        if owner:
                            self.pool.adopt(job.run_dir, worker.get("pid"))
                    elif owner and job.worker_lost():
                        front.append(job.run_dir)
                self.table.add(job)
            if owner:
                self.queue.restore({j.run_dir: j.submitted_at for j in self.table.in_state(QUEUED)}, front)

    # ------------------------------------------------------------------------------ the thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lapmusic-supervisor", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Tick now rather than at the next ``TICK_SECONDS``."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the scheduler must survive a bad run folder
                log.exception("job supervisor")
            self._wake.wait(TICK_SECONDS)
            self._wake.clear()

    def tick(self) -> None:
        """Record how ended workers' runs ended, then start queued jobs while worker slots are free."""
        with self.lock:
            if self._stop.is_set():
                return
            for run_dir in self.pool.ended():
                if (job := self.table.get(run_dir)) is not None:
                    self._record_exit(job)
            while len(self.queue) and len(self.table.in_state(RUNNING)) < self.max_jobs:
                run_dir = self.queue.pop()
                job = self.table.get(run_dir)
                if job is None or job.state != QUEUED or not run_dir.is_dir():
                    continue
                if (info := live_worker(run_dir)) is not None:  # a worker of a previous server is still on it
                    job.state = RUNNING
                    self.pool.adopt(run_dir, info.get("pid"))
                    continue
                self._start(job)

    def _start(self, job: Job) -> None:
        try:
            self.pool.start(job.run_dir)
        except OSError as exc:
            job.state, job.error = FAILED, f"could not start a worker process ({exc})"
            job.write_status(state=FAILED, error=job.error, message="failed")
            return
        job.state, job.started_at = RUNNING, time.time()
        job.write_status(state=RUNNING, error=None, message="starting a worker")

    def _record_exit(self, job: Job) -> None:
        if job.worker_exited():
            self.queue.append(job.run_dir, job.submitted_at, front=True)
        self.table.index(job)

    def reap(self, job: Job, timeout: float = 10.0) -> None:
        """Wait up to ``timeout`` seconds for ``job``'s worker, which has written its final status, to exit,
        and record its end (a resume right after a stop must not find the run still running)."""
        with self.lock:
            if self.pool.wait(job.run_dir, timeout):
                self._record_exit(job)

    # ------------------------------------------------------------------------------ shutdown
    def stop(self, *, requeue: bool, timeout: float) -> None:
        """Stop the thread and this server's workers; with ``requeue`` their runs go back to the front of the
        queue. A worker still running after ``timeout`` seconds stops by itself at its next batch."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        for run_dir in self.pool.stop(timeout):
            with self.lock:
                job = self.table.get(run_dir)
                status = read_json(run_dir / "status.json") or {}
                if requeue and status.get("state") in (CANCELLED, RUNNING):
                    job.state = QUEUED
                    job.write_status(state=QUEUED, error=None, message="re-queued: the server stopped")
                    self.queue.append(run_dir, job.submitted_at, front=True)
                else:
                    job.state = str(status.get("state") or INTERRUPTED)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()
