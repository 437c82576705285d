"""The app's job manager: training in worker processes, one run per configuration, a queue on disk.

One :class:`JobManager` per server process and runs folder (the app keeps it in ``st.cache_resource``);
it is what the pages call. It owns its parts and passes them what they need: the jobs
(:mod:`~lapmusic.jobs.table`), the queue (:mod:`~lapmusic.jobs.queue`, ``RUNS/.lapmusic/queue.json``), the
worker processes (:mod:`~lapmusic.jobs.pool`), the thread that starts queued jobs, records how workers ended
and adopts those of a killed server (:mod:`~lapmusic.jobs.scheduler`), the quotas
(:mod:`~lapmusic.jobs.limits`) and the estimates (:mod:`~lapmusic.jobs.estimate`).

A run is keyed by :func:`~lapmusic.jobs.runs.run_key`: Train with the key of a queued, running or finished
run makes the session follow that run (no new work, no quota spent). Stop on a run that several sessions
follow only unfollows it for the one who pressed it; the last follower (or the teacher) stops it. On a clean
shutdown (:meth:`JobManager.close`) the manager stops its workers and re-queues their runs at the front.
One manager owns a runs folder at a time (``RUNS/.lapmusic/manager.lock``); another server on the same
folder only reads it.

No Streamlit here: tests drive it with a fake training function in real worker processes.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import shutil
import threading
import time
from pathlib import Path

from lapmusic.core.errors import LapMusicError
from lapmusic.core.io import atomic_write_json, read_json
from lapmusic.jobs.estimate import Estimator
from lapmusic.jobs.job import Job
from lapmusic.jobs.limits import Quotas, cuda_devices, default_max_jobs
from lapmusic.jobs.pool import WorkerPool
from lapmusic.jobs.queue import PersistentQueue
from lapmusic.jobs.runs import (
    ACTIVE_STATES,
    CANCELLED,
    DONE_STATES,
    QUEUED,
    RUNNING,
    clean_student,
    default_runs_dir,
    run_folder_name,
    run_key,
    summarize_run,
)
from lapmusic.jobs.scheduler import Scheduler
from lapmusic.jobs.sessions import state_dir
from lapmusic.jobs.table import JobTable
from lapmusic.jobs.worker import CANCEL_FILE

log = logging.getLogger(__name__)


class JobManager:
    """Queues runs, trains them in worker processes (at most ``max_jobs`` at once), shares identical runs.

    Thread-safe: any Streamlit session thread may call any method.

    Parameters
    ----------
    runs_dir : path, optional
        The runs folder (``$LAPMUSIC_RUNS_DIR`` or ``./runs`` by default); created when missing.
    max_jobs : int, optional
        Worker slots; :func:`~lapmusic.jobs.limits.default_max_jobs` by default.
    quotas : Quotas, optional
        New runs per session and client; :meth:`Quotas.from_env` by default.
    worker_env : dict, optional
        Extra environment variables for the workers (tests set ``LAPMUSIC_WORKER_TRAIN`` to a fake training).
    cuda : bool, optional
        Whether workers get GPUs; by default one slot per CUDA GPU found.
    start : bool, default True
        Start the scheduler's thread. Without it, jobs start only when the caller calls :meth:`tick`.
    """

    def __init__(self, runs_dir: str | os.PathLike | None = None, *, max_jobs: int | None = None,
                 quotas: Quotas | None = None, worker_env: dict | None = None, cuda: bool | None = None,
                 start: bool = True):
        self.runs_dir = (Path(runs_dir) if runs_dir is not None else default_runs_dir()).resolve()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.gpus = cuda_devices() if cuda is None else (1 if cuda else 0)
        self.max_jobs = max(1, int(max_jobs)) if max_jobs is not None else default_max_jobs()
        self.quotas = quotas if quotas is not None else Quotas.from_env()
        self._lock = threading.RLock()
        self._table = JobTable()
        self._queue = PersistentQueue(self.runs_dir)
        pool = WorkerPool(threads=(os.cpu_count() or 1) // self.max_jobs, gpus=self.gpus, env=worker_env)
        self._scheduler = Scheduler(self._table, self._queue, pool, self._lock, self.max_jobs)
        self._estimator = Estimator(self.runs_dir, self._configs)
        self.owner = self._take_folder()
        """False when another server manages this runs folder: then this one only reads it."""
        self._scheduler.recover(self.runs_dir, self.owner)
        if start and self.owner:
            self._scheduler.start()
            atexit.register(self.close)

    def _take_folder(self) -> bool:
        path = state_dir(self.runs_dir) / "manager.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another server manages %s; this one only shows its runs", self.runs_dir)
            return False
        return True

    def _configs(self) -> dict[Path, dict]:
        with self._lock:
            return self._table.configs()

    def _active(self) -> list[Job]:
        return self._table.in_state(*ACTIVE_STATES)

    # ----------------------------------------------------------------------------- submitting
    def submit(self, config: dict | None, *, session: str | None = None, client: str | None = None,
               student: str | None = None, group: str | None = None, run_dir: str | os.PathLike | None = None,
               resume: bool = False) -> Job:
        """Queue a run, or attach ``session`` to an identical one, and return its job.

        Parameters
        ----------
        config : dict or None
            The run's training config (``TrainConfig.to_dict()``); ignored (None) with ``resume``.
        session, client : str, optional
            Who asks: the browser session (it follows the run) and its IP (quotas; None on the server machine).
        student : str, optional
            A name for the run folder and its title.
        group : str, optional
            The Train press this run belongs to (the pages show a session's latest group).
        run_dir : path, optional
            The new run's folder (default: a fresh one under ``runs_dir``); with ``resume``, the run to resume.
        resume : bool, default False
            Queue the stopped run in ``run_dir`` again; it continues from its checkpoint.

        Returns
        -------
        Job
            The new job, or the queued, running or finished job with the same run key, which ``session`` now
            follows (``job.creator != session`` tells).

        Raises
        ------
        LapMusicError
            When another server manages the runs folder, a quota is reached, ``run_dir`` already holds a run,
            or (with ``resume``) the run is active, has no checkpoint or is no run folder.
        """
        if not self.owner:
            raise LapMusicError("another lapmusic server manages this runs folder; train there, or stop it")
        if resume:
            return self._resume(Path(run_dir or ""), session, client, group)
        if not isinstance(config, dict):
            raise TypeError(f"submit takes the run's config as a dict (TrainConfig.to_dict()), not "
                            f"{type(config).__name__}")
        config = dict(config)
        key = run_key(config, cuda=self.gpus > 0)
        with self._lock:
            if (existing := self._table.for_key(key)) is not None:
                if session is not None:
                    existing.follow(session, group)
                    existing.save()
                return existing
            self.quotas.check(self._active(), session, client)
            target = Path(run_dir) if run_dir is not None else self.runs_dir / run_folder_name(config, student=student)
            target = target.resolve()
            if (target / "config.json").exists():
                raise LapMusicError(f"{target.name} already holds a run; choose another folder")
            job = Job(run_dir=target, config=config, key=key, submitted_at=time.time(), creator=session,
                      client=client, student=clean_student(student))
            job.follow(session, group)
            atomic_write_json(target / "config.json", config)
            job.save()
            job.write_status(state=QUEUED, error=None, message="waiting in the queue")
            self._table.add(job)
            self._queue.append(target, job.submitted_at)
        self._scheduler.wake()
        return job

    def _resume(self, run_dir: Path, session: str | None, client: str | None, group: str | None) -> Job:
        run_dir = run_dir.resolve()
        config = read_json(run_dir / "config.json")
        if config is None:
            raise LapMusicError(f"{run_dir} is not a run folder (no config.json); choose another run")
        summary = summarize_run(run_dir)
        with self._lock:
            job = self._table.get(run_dir)
            if job is not None and job.state == RUNNING and summary is not None and summary.state in DONE_STATES:
                self._scheduler.reap(job)  # its worker has written its last status and is exiting right now
            if summary is not None and summary.state in ACTIVE_STATES or (job is not None and job.active):
                raise LapMusicError(f"run {run_dir.name} is already {summary.state if summary else job.state}; "
                                    "wait for it or stop it first")
            if not (run_dir / "checkpoint.pt").is_file():
                raise LapMusicError(f"run {run_dir.name} has no checkpoint to resume from; start a new run")
            self.quotas.check(self._active(), session, client)
            if job is None:  # a run of the lapmusic command, resumed from the app: managed from now on
                job = Job(run_dir=run_dir, config=config, key=None, submitted_at=time.time())
            job.creator, job.client, job.state, job.error, job.attempts = session, client, QUEUED, None, 0
            job.follow(session, group)
            job.save()
            job.write_status(state=QUEUED, error=None, message="waiting in the queue (resume)")
            self._queue.append(run_dir, time.time())
            self._table.add(job)
        self._scheduler.wake()
        return job

    # ----------------------------------------------------------------------------- querying
    def get(self, job_id: str) -> Job | None:
        """The job of the run folder ``runs_dir / job_id``; None when this manager has none (or ``job_id`` is empty)."""
        if not job_id:
            return None
        key = (self.runs_dir / job_id).resolve()  # file-system calls outside the lock every page shares
        with self._lock:
            return self._table.get(key)

    def job_for_run(self, run_dir: str | os.PathLike) -> Job | None:
        """The job of the run folder ``run_dir`` (any path to it); None for a run this manager does not manage."""
        key = Path(run_dir).resolve()
        with self._lock:
            return self._table.get(key)

    def jobs(self, session: str | None = None) -> list[Job]:
        """The runs ``session`` follows, in the order the session took them (all jobs by submission time
        when ``session`` is None)."""
        with self._lock:
            return self._table.followed_by(session)

    def has_run_for(self, key: str) -> bool:
        """True when Train with this run key would follow an existing run rather than make a new one."""
        with self._lock:
            return self._table.for_key(key) is not None

    def slots_left(self, session: str, client: str | None = None) -> int:
        """How many more new runs ``session`` (from ``client``) may queue now (following a run is free)."""
        with self._lock:
            return self.quotas.slots_left(self._active(), session, client)

    def queue_position(self, job_id: str) -> int | None:
        """The job's place in the queue: 1 for the next to start; None when it is not queued."""
        with self._lock:
            return self._queue.position(self.runs_dir / job_id)

    @property
    def running_count(self) -> int:
        with self._lock:
            return len(self._table.in_state(RUNNING))

    @property
    def queued_count(self) -> int:
        with self._lock:
            return len(self._queue)

    def estimates(self) -> dict[str, dict]:
        """When each running and queued job should start and finish.

        Returns
        -------
        dict
            ``{job id: {"position", "start_in", "finish_in", "measured"}}``: the queue position (None while
            running), seconds from now, and whether runs of that size were measured (else a rough default).
        """
        with self._lock:
            running = self._table.in_state(RUNNING)
            queued = [j for r in self._queue.runs() if (j := self._table.get(r)) is not None]
        return self._estimator.estimates(running, queued, self.max_jobs)

    # ----------------------------------------------------------------------------- control
    def cancel(self, job_id: str, session: str | None = None, *, teacher: bool = False) -> str:
        """Stop following a run, or stop it.

        Parameters
        ----------
        job_id : str
            The run folder's name.
        session : str, optional
            Who presses Stop. While others follow the run too, only this session lets go of it.
            None (a script) stops it.
        teacher : bool, default False
            Stop it whoever follows it.

        Returns
        -------
        str
            ``"unfollowed"`` (others still follow it), ``"cancelled"`` (a queued run dropped), ``"stopping"``
            (its worker stops at its next batch) or ``"unknown"`` (no such active run).

        Raises
        ------
        LapMusicError
            When ``session`` does not follow the run, or the stop request cannot be written.
        """
        with self._lock:
            job = self.get(job_id)
            if job is None or not job.active:
                return "unknown"
            if session is not None and not teacher:
                if session not in job.sessions:
                    raise LapMusicError("this run was started by someone else; only they or the teacher can stop it")
                if len(job.sessions) > 1:
                    job.sessions.pop(session)
                    job.save()
                    return "unfollowed"
            if job.state == QUEUED:
                self._queue.remove(job.run_dir)
                job.state, job.finished_at = CANCELLED, time.time()
                job.write_status(state=CANCELLED, error=None, message="stopped before it started")
                return "cancelled"
            try:
                (job.run_dir / CANCEL_FILE).touch()
            except OSError as exc:
                raise LapMusicError(f"could not ask {job.id} to stop ({exc}); is {job.run_dir} writable?") from exc
            return "stopping"

    def delete(self, job_id: str, session: str | None = None, *, teacher: bool = False) -> None:
        """Delete a run folder that is neither queued nor running.

        Parameters
        ----------
        job_id : str
            The run folder, relative to ``runs_dir``.
        session : str, optional
            Who deletes: allowed when this session alone follows the run.
        teacher : bool, default False
            Delete any run, also one that others follow or the ``lapmusic`` command made.

        Raises
        ------
        LapMusicError
            When the folder is outside the runs folder or no run folder, the run is active, or ``session``
            may not delete it.
        """
        run_dir = (self.runs_dir / job_id).resolve()
        if run_dir.parent != self.runs_dir and self.runs_dir not in run_dir.parents:
            raise LapMusicError("only run folders inside the runs folder can be deleted")
        summary = summarize_run(run_dir, self)
        if summary is None:
            raise LapMusicError(f"{job_id} is not a run folder")
        if summary.state in ACTIVE_STATES:
            raise LapMusicError(f"{job_id} is {summary.state}; stop it before deleting it")
        with self._lock:
            job = self._table.get(run_dir)
            followers = set(job.sessions) if job is not None else set()
            if not teacher and (session is None or followers - {session} or job is None):
                raise LapMusicError("only the teacher can delete a run that others follow or the lapmusic command made")
            shutil.rmtree(run_dir, ignore_errors=True)
            if job is not None:
                self._table.remove(job)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job is done (tests, scripts).

        Returns
        -------
        Job
            The job, no longer queued or running.

        Raises
        ------
        KeyError
            When this manager has no such job.
        TimeoutError
            When it is still active after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job is None:
                raise KeyError(job_id)
            if not job.active:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout} s")
            self._scheduler.wake()
            time.sleep(0.05)

    # ----------------------------------------------------------------------------- the scheduler
    def tick(self) -> None:
        """Record how ended workers' runs ended, then start queued jobs in free slots (what the scheduler's
        thread does twice a second; call it yourself with ``start=False``)."""
        self._scheduler.tick()

    def close(self, requeue: bool = True, timeout: float = 5.0) -> None:
        """Stop the scheduler and this server's workers (a clean shutdown; called at exit).

        Parameters
        ----------
        requeue : bool, default True
            Put the stopped runs back at the front of the queue, to continue from their checkpoints on the
            next start.
        timeout : float, default 5.0
            Seconds to wait for the workers; one still running then stops by itself at its next batch.
        """
        if self._scheduler.stopped:
            return
        self._scheduler.stop(requeue=requeue and self.owner, timeout=timeout)
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)
