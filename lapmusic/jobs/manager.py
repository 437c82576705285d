"""The app's job manager: training in worker processes, one run per configuration, a queue on disk.

One :class:`JobManager` per server process and runs folder (the app keeps it in ``st.cache_resource``): what
the pages call. It owns the parts of :mod:`lapmusic.jobs` and passes them what they need. A run is keyed by
:func:`~lapmusic.jobs.runs.run_key`: Train with the key of a queued, running or finished run makes the
session follow that run (no new work, no quota spent). Stop on a run that several sessions follow only
unfollows it for the one who pressed it; the last follower (or the teacher) stops it. One manager owns a
runs folder at a time (:mod:`lapmusic.jobs.folder`); another server on the same folder only reads it.

No Streamlit here: tests drive it with a fake training function in real worker processes.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import threading
import time
from pathlib import Path

from lapmusic.core.errors import LapMusicError
from lapmusic.core.io import read_json
from lapmusic.core.lock import RunFolderBusy, run_lock
from lapmusic.jobs.admission import Request, admit, readmit
from lapmusic.jobs.estimate import Estimator
from lapmusic.jobs.folder import describe_holder, refuse_if_held, take_ownership
from lapmusic.jobs.job import Job
from lapmusic.jobs.limits import Quotas, cuda_devices, default_max_jobs
from lapmusic.jobs.queue import PersistentQueue
from lapmusic.jobs.rayexec import choose_executor
from lapmusic.jobs.runs import (
    ACTIVE_STATES,
    CANCELLED,
    QUEUED,
    RUNNING,
    default_runs_dir,
    summarize_run,
)
from lapmusic.jobs.scheduler import Scheduler
from lapmusic.jobs.table import JobTable
from lapmusic.jobs.worker import CANCEL_FILE


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
        Start the scheduler's thread. Without it, jobs start only when the caller calls ``scheduler.tick()``.
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
        pool = choose_executor(threads=(os.cpu_count() or 1) // self.max_jobs, gpus=self.gpus, env=worker_env)
        self.scheduler = Scheduler(self._table, self._queue, pool, self._lock, self.max_jobs)
        """Starts queued jobs and records how workers ended (:class:`~lapmusic.jobs.scheduler.Scheduler`)."""
        self.estimator = Estimator(self.runs_dir, self._configs)
        """Durations from the runs measured in this folder (:class:`~lapmusic.jobs.estimate.Estimator`)."""
        self._owner_lock = take_ownership(self.runs_dir)
        self.owner = self._owner_lock is not None
        """False when another server manages this runs folder: then this one only reads it."""
        self.scheduler.recover(self.runs_dir, self.owner)
        if start and self.owner:
            self.scheduler.start()
            atexit.register(self.close)

    def _configs(self) -> dict[Path, dict]:
        with self._lock:
            return self._table.configs()

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
        TypeError
            When ``config`` is not a dict.
        """
        if resume:
            self._check_owner()
            return self._resume(Path(run_dir or ""), session, client, group)
        return self.submit_group([config], session=session, client=client, student=student, group=group,
                                 run_dirs=None if run_dir is None else [run_dir])[0]

    def submit_group(self, configs: list[dict], *, session: str | None = None, client: str | None = None,
                     student: str | None = None, group: str | None = None, run_dirs: list | None = None) -> list[Job]:
        """Queue the runs of one Train press (an LAE/random pair) whole or not at all.

        Parameters are those of :meth:`submit`, with a list of configs (and of folders, ``run_dirs``).

        Returns
        -------
        list of Job
            One per config, in order: new, or the existing run with the same key that ``session`` now follows.

        Raises
        ------
        LapMusicError
            When another server manages the runs folder, the quotas do not leave room for all the new runs
            together (checked under the lock), or a folder holds a run: then nothing is queued or followed.
        TypeError
            When a config is not a dict.
        """
        self._check_owner()
        request = Request(session=session, client=client, student=student, group=group)
        with self._lock:
            jobs = admit(self._table, self._queue, self.quotas, self.runs_dir, configs, request,
                         cuda=self.gpus > 0, run_dirs=run_dirs)
        self.scheduler.wake()
        return jobs

    def _check_owner(self) -> None:
        if not self.owner:
            raise LapMusicError("another lapmusic server manages this runs folder; train there, or stop it")

    def _resume(self, run_dir: Path, session: str | None, client: str | None, group: str | None) -> Job:
        run_dir = run_dir.resolve()
        config = read_json(run_dir / "config.json")
        if config is None:
            raise LapMusicError(f"{run_dir} is not a run folder (no config.json); choose another run")
        summary = summarize_run(run_dir)
        request = Request(session=session, client=client, student=None, group=group)
        with self._lock:
            job = readmit(self._table, self._queue, self.quotas, run_dir, config, summary, request,
                          reap=self.scheduler.reap)
        self.scheduler.wake()
        return job

    def get(self, job_id: str) -> Job | None:
        """The job of the run folder ``runs_dir / job_id`` (:attr:`Job.id` is the folder's name); None when this
        manager has no such job (a run of the ``lapmusic`` command, or an empty ``job_id``)."""
        if not job_id:
            return None
        key = (self.runs_dir / job_id).resolve()  # file-system calls outside the lock every page shares
        with self._lock:
            return self._table.get(key)

    def job_for_run(self, run_dir: str | os.PathLike) -> Job | None:
        """Like :meth:`get`, for any path to the run folder; None for a run this manager does not manage."""
        key = Path(run_dir).resolve()
        with self._lock:
            return self._table.get(key)

    def jobs(self, session: str | None = None) -> list[Job]:
        """The jobs a browser session follows.

        Parameters
        ----------
        session : str, optional
            The session id; None for every job of this manager.

        Returns
        -------
        list of Job
            In the order the session took them (Train or follow); every job by submission time for None.
        """
        with self._lock:
            return self._table.followed_by(session)

    def has_run_for(self, key: str) -> bool:
        """True when Train with this run key (:func:`~lapmusic.jobs.runs.run_key`) would follow an existing
        queued, running or finished run rather than make a new one."""
        with self._lock:
            return self._table.for_key(key) is not None

    def slots_left(self, session: str, client: str | None = None) -> int:
        """How many more new runs a session may queue now (following a run is free).

        Parameters
        ----------
        session : str
            The browser session.
        client : str, optional
            Its IP address (None on the server machine: no per-client limit).

        Returns
        -------
        int
            At least 0: the smaller of what the session's and the client's quotas leave.
        """
        with self._lock:
            return self.quotas.slots_left(self._table.in_state(*ACTIVE_STATES), session, client)

    def queue_position(self, job_id: str) -> int | None:
        """A job's place in the queue.

        Parameters
        ----------
        job_id : str
            The run folder's name.

        Returns
        -------
        int or None
            1 for the next job to start, 2 for the one after it...; None when the job is not queued.
        """
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
            ``{job id: {"position", "start_in", "finish_in", "start_range", "finish_range", "measured",
            "basis"}}``: the queue position (None while running), seconds from now with ``(low, high)`` ranges,
            and what they come from (:func:`lapmusic.jobs.estimate.predict`; ``measured`` False: a rough default).
        """
        with self._lock:
            running = self._table.in_state(RUNNING)
            queued = [j for r in self._queue.runs() if (j := self._table.get(r)) is not None]
        return self.estimator.estimates(running, queued, self.max_jobs)

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
            (its worker stops at its next batch, keeping its last checkpoint) or ``"unknown"`` (no active run).

        Raises
        ------
        LapMusicError
            When the run folder is written by a process this server did not start (``lapmusic train
            --resume`` in a terminal, another server), or the stop request cannot be written.
        """
        with self._lock:
            job = self.get(job_id)
            if job is None or not job.active:
                refuse_if_held(self.runs_dir / job_id if job_id else None, "not by this server; stop it there")
                return "unknown"
            if session is not None and not teacher and job.let_go(session):
                return "unfollowed"
            if job.state == QUEUED:  # resumed in a terminal while queued here: its status is not ours to write
                refuse_if_held(job.run_dir, "not by this server; stop it there")
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
            When the folder is outside the runs folder or no run folder, the run is active, a process holds
            its writer lock (:mod:`lapmusic.core.lock`: a worker, ``lapmusic train --resume`` in a terminal;
            the message names it), or ``session`` may not delete it.
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
            try:  # the lock, not only the heartbeat: `lapmusic train --resume` may write after its worker died
                with run_lock(run_dir, clean=False):  # held while deleting: no writer starts in between
                    shutil.rmtree(run_dir, ignore_errors=True)
            except RunFolderBusy as exc:
                raise LapMusicError(f"{job_id} is being written by {describe_holder(exc.owner)}; it cannot be "
                                    "deleted while it writes: stop it first") from None
            if job is not None:
                self._table.remove(job)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job is neither queued nor running (tests, scripts), and return it.

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
            self.scheduler.wake()
            time.sleep(0.05)

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
        if self.scheduler.stopped:
            return
        self.scheduler.stop(requeue=requeue and self.owner, timeout=timeout)
        if self._owner_lock is not None:
            with contextlib.suppress(OSError):
                os.close(self._owner_lock)
