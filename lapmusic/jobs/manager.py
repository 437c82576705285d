"""The app's job manager: training in worker processes, one run per configuration, a queue on disk.

One :class:`JobManager` per server process and runs folder (the app keeps it in ``st.cache_resource``).

- **Workers.** Each running job is a separate process ``python -m lapmusic.jobs.worker RUNDIR``
  (:mod:`lapmusic.jobs.worker`), started in its own process session, with ``$LAPMUSIC_WORKER_THREADS`` torch
  threads and a lower priority. The server process only reads run folders. A supervisor thread checks
  every ``TICK_SECONDS`` whether workers ended (``Popen.poll``, or for workers adopted after a restart:
  pid + heartbeat) and starts queued jobs while slots are free.
- **Slots.** ``$LAPMUSIC_MAX_JOBS``, else one per CUDA GPU (each worker sees only its GPU), else half the
  CPU cores (at least 1); each CPU worker gets ``cores / slots`` threads, so slots never oversubscribe.
- **Sharing.** A run is keyed by :func:`lapmusic.runs.run_key` (full config + dataset version + code
  version). Train with a key that is queued, running or finished attaches the session to that run: no new
  work, no quota spent. Only new runs count against ``$LAPMUSIC_MAX_JOBS_PER_SESSION`` (default 2) and
  ``$LAPMUSIC_MAX_JOBS_PER_CLIENT`` (default 4 per client IP; browsers on the server machine itself have
  no IP in Streamlit and are not limited per client).
- **Stopping.** Stop on a run followed by several sessions only unfollows it for the one who pressed it;
  the last follower (or the teacher) stops it: a queued job is dropped, a running worker finds
  ``RUNDIR/cancel`` at its next batch and exits keeping its last checkpoint.
- **Restarts.** The queue is ``RUNS/.lapmusic/queue.json`` (:mod:`lapmusic.jobs.queue`); who follows a run
  is in ``RUNDIR/job.json``. A new manager re-reads both: queued runs keep their order; a worker still
  alive (its server was killed) is adopted; a run whose worker died is ``interrupted`` and resumable from
  its checkpoint, or re-queued at the front when it had none (at most ``MAX_ATTEMPTS`` times). On a clean
  shutdown the manager stops its workers and re-queues their runs at the front, to resume on the next start.
  One manager owns a runs folder at a time (``RUNS/.lapmusic/manager.lock``); another server on the same
  folder only reads it.

No Streamlit here: tests drive it with a fake training function in real worker processes.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from lapmusic.core.errors import LapMusicError
from lapmusic.core.io import atomic_write_json, read_json
from lapmusic.jobs.estimate import Timing, measure, remaining, schedule
from lapmusic.jobs.job import Job
from lapmusic.jobs.queue import PersistentQueue
from lapmusic.jobs.runs import (
    ACTIVE_STATES,
    CANCELLED,
    DONE_STATES,
    FINISHED,
    INTERRUPTED,
    JOB_FILE,
    QUEUED,
    RUNNING,
    candidate_dirs,
    clean_student,
    default_runs_dir,
    run_folder_name,
    run_key,
    summarize_run,
)
from lapmusic.jobs.sessions import state_dir
from lapmusic.jobs.supervisor import (
    WorkerSupervisor,
    _env_int,
    cuda_devices,
    default_max_jobs,
)
from lapmusic.jobs.worker import CANCEL_FILE, live_worker

log = logging.getLogger(__name__)

TIMING_TTL = 30.0  # seconds a measured epoch time is reused before metrics.jsonl files are read again


# ------------------------------------------------------------------------------ settings
def default_max_per_session() -> int | None:
    """``$LAPMUSIC_MAX_JOBS_PER_SESSION``: new runs one browser session may have queued or training
    (default 2, one LAE/random pair); 0 = no limit."""
    value = _env_int("LAPMUSIC_MAX_JOBS_PER_SESSION", 2)
    return None if value is None or value <= 0 else value


def default_max_per_client() -> int | None:
    """``$LAPMUSIC_MAX_JOBS_PER_CLIENT``: the same per client IP (default 4: two browsers per person);
    0 = no limit."""
    value = _env_int("LAPMUSIC_MAX_JOBS_PER_CLIENT", 4)
    return None if value is None or value <= 0 else value


def config_to_dict(config: Any) -> dict:
    """A TrainConfig (anything with ``to_dict``), a dataclass or a dict, as a plain dict."""
    if isinstance(config, dict):
        return dict(config)
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    from dataclasses import asdict, is_dataclass

    if is_dataclass(config):
        return asdict(config)
    raise TypeError(f"cannot turn {type(config).__name__} into a config dict")


class JobManager(WorkerSupervisor):
    """Queues runs, trains them in worker processes (at most ``max_jobs`` at once), shares identical runs.

    Thread-safe: any Streamlit session thread may call any method. ``worker_env`` adds environment
    variables for the workers (tests set ``LAPMUSIC_WORKER_TRAIN`` to a fake training function).
    """

    def __init__(
        self,
        runs_dir: str | os.PathLike | None = None,
        *,
        max_jobs: int | None = None,
        max_per_session: int | None | str = "env",
        max_per_client: int | None | str = "env",
        worker_env: dict | None = None,
        cuda: bool | None = None,
        start: bool = True,
    ):
        self.runs_dir = (Path(runs_dir) if runs_dir is not None else default_runs_dir()).resolve()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.gpus = cuda_devices() if cuda is None else (1 if cuda else 0)
        self.max_jobs = max(1, int(max_jobs)) if max_jobs is not None else default_max_jobs()
        self.max_per_session = default_max_per_session() if max_per_session == "env" else max_per_session
        self.max_per_client = default_max_per_client() if max_per_client == "env" else max_per_client
        self.threads_per_worker = max(1, (os.cpu_count() or 1) // self.max_jobs)
        self.worker_env = dict(worker_env or {})
        self._lock = threading.RLock()
        self._jobs: dict[Path, Job] = {}
        self._by_key: dict[str, Job] = {}
        self._queue = PersistentQueue(self.runs_dir)
        self._timings: dict[tuple, tuple[float, Timing]] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.owner = self._take_folder()
        """False when another server manages this runs folder: then this one only reads it."""
        self._recover()
        self._thread: threading.Thread | None = None
        if start and self.owner:
            self._thread = threading.Thread(target=self._supervise, name="lapmusic-supervisor", daemon=True)
            self._thread.start()
            atexit.register(self.close)

    # ----------------------------------------------------------------------------- ownership, recovery
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

    def _recover(self) -> None:
        """Rebuild the jobs, the key index and the queue from the runs folder (after a restart)."""
        requeue_front: list[Job] = []
        for run_dir in candidate_dirs(self.runs_dir):
            info = read_json(run_dir / JOB_FILE)
            config = read_json(run_dir / "config.json")
            if info is None or config is None:
                continue  # a run of the lapmusic command: listed by the pages, not managed here
            run_dir = run_dir.resolve()
            job = Job(run_dir=run_dir, config=config, key=info.get("key"),
                      submitted_at=float(info.get("submitted") or 0.0), creator=info.get("creator"),
                      client=info.get("client"), student=clean_student(info.get("student")),
                      sessions=dict(info.get("sessions") or {}), attempts=int(info.get("attempts") or 0))
            status = read_json(run_dir / "status.json") or {}
            job.state = str(status.get("state") or QUEUED)
            if job.state == RUNNING:
                if (worker := live_worker(run_dir)) is not None:
                    job.pid = worker.get("pid")  # adopt the orphan
                    job.started_at = time.time()
                elif self.owner:
                    self._worker_gone(job, requeue=requeue_front)
            elif job.state not in DONE_STATES + (QUEUED,):
                job.state = INTERRUPTED
            self._jobs[run_dir] = job
            self._index(job)
        saved = [(r.resolve(), t) for r, t in self._queue.load()]
        order = [job.run_dir for job in sorted(requeue_front, key=lambda j: j.submitted_at)]
        order += [r for r, _ in saved if r in self._jobs and self._jobs[r].state == QUEUED and r not in order]
        missing = sorted((j for j in self._jobs.values() if j.state == QUEUED and j.run_dir not in order),
                         key=lambda j: j.submitted_at)
        order += [j.run_dir for j in missing]
        if self.owner:
            self._queue.replace([(r, self._jobs[r].submitted_at) for r in order])

    def _index(self, job: Job) -> None:
        """Remember ``job`` as the run for its key (an active or finished run beats a stopped one)."""
        if job.key is None:
            return
        current = self._by_key.get(job.key)
        usable = (QUEUED, RUNNING, FINISHED)
        if current is None or (job.state in usable and (current.state not in usable
                                                         or job.submitted_at >= current.submitted_at)):
            self._by_key[job.key] = job

    def _save_job(self, job: Job) -> None:
        try:
            atomic_write_json(job.run_dir / JOB_FILE, job.to_file())
        except OSError:
            log.exception("could not write %s", job.run_dir / JOB_FILE)

    def _write_status(self, job: Job, **fields) -> None:
        path = job.run_dir / "status.json"
        status = read_json(path) or {}
        status.update(fields)
        status["updated"] = time.time()
        status.setdefault("epoch", 0)
        status.setdefault("epochs", job.config.get("epochs"))
        try:
            atomic_write_json(path, status)
        except OSError:
            log.exception("could not write %s", path)

    # ----------------------------------------------------------------------------- submitting
    def submit(self, config: Any, *, session: str | None = None, client: str | None = None,
               student: str | None = None, group: str | None = None, run_dir: str | os.PathLike | None = None,
               resume: bool = False) -> Job:
        """Queue a run (or attach to an identical one) and return its job.

        A new run gets a folder under ``runs_dir``; when a run with the same key is queued, running or
        finished, ``session`` simply follows it (``job.creator != session`` tells). ``resume=True``
        queues the stopped run in ``run_dir`` again; it continues from its checkpoint. Raises
        LapMusicError when a limit is reached or the run cannot be queued.
        """
        if not self.owner:
            raise LapMusicError("another lapmusic server manages this runs folder; train there, or stop it")
        if resume:
            return self._resume(Path(run_dir or ""), session, client, group)
        config_dict = config_to_dict(config)
        key = run_key(config_dict, cuda=self.gpus > 0)
        with self._lock:
            if self.has_run_for(key):
                existing = self._by_key[key]
                self._follow(existing, session, group)
                return existing
            self._check_quota(session, client)
            now = time.time()
            target = Path(run_dir) if run_dir is not None else self.runs_dir / run_folder_name(
                config_dict, student=student)
            target = target.resolve()
            if (target / "config.json").exists():
                raise LapMusicError(f"{target.name} already holds a run; choose another folder")
            job = Job(run_dir=target, config=config_dict, key=key, submitted_at=now, creator=session,
                      client=client, student=clean_student(student))
            if session is not None:
                job.sessions[session] = {"group": group, "at": now}
            atomic_write_json(target / "config.json", config_dict)
            self._save_job(job)
            self._write_status(job, state=QUEUED, error=None, message="waiting in the queue")
            self._jobs[target] = job
            self._index(job)
            self._queue.append(target, now)
        self._wake.set()
        return job

    def _follow(self, job: Job, session: str | None, group: str | None) -> None:
        if session is not None:
            job.sessions[session] = {"group": group, "at": time.time()}
            self._save_job(job)

    def _check_quota(self, session: str | None, client: str | None) -> None:
        if session is not None and self.slots_left(session, client) <= 0:
            raise LapMusicError(
                f"you already have {self.max_per_session} new runs queued or training (from this browser at most "
                f"{self.max_per_session}, from this computer at most {self.max_per_client}); wait for one to "
                "finish or stop it, then start another"
            )

    def _resume(self, run_dir: Path, session: str | None, client: str | None, group: str | None) -> Job:
        run_dir = run_dir.resolve()
        config = read_json(run_dir / "config.json")
        if config is None:
            raise LapMusicError(f"{run_dir} is not a run folder (no config.json); choose another run")
        summary = summarize_run(run_dir)
        with self._lock:
            job = self._jobs.get(run_dir)
            if job is not None and job.state == RUNNING and summary is not None and summary.state in DONE_STATES:
                self._reap(job)  # its worker has written its last status and is exiting right now
            if summary is not None and summary.state in ACTIVE_STATES or (job is not None and job.active):
                raise LapMusicError(f"run {run_dir.name} is already {summary.state if summary else job.state}; "
                                    "wait for it or stop it first")
            if not (run_dir / "checkpoint.pt").is_file():
                raise LapMusicError(f"run {run_dir.name} has no checkpoint to resume from; start a new run")
            self._check_quota(session, client)
            if job is None:  # a run of the lapmusic command, resumed from the app: managed from now on
                job = Job(run_dir=run_dir, config=config, key=None, submitted_at=time.time())
                self._jobs[run_dir] = job
            job.creator, job.client, job.state, job.error, job.attempts = session, client, QUEUED, None, 0
            if session is not None:
                job.sessions[session] = {"group": group, "at": time.time()}
            self._save_job(job)
            self._write_status(job, state=QUEUED, error=None, message="waiting in the queue (resume)")
            self._queue.append(run_dir, time.time())
            self._index(job)
        self._wake.set()
        return job

    # ----------------------------------------------------------------------------- querying
    def get(self, job_id: str) -> Job | None:
        if not job_id:
            return None
        key = (self.runs_dir / job_id).resolve()  # file-system calls outside the lock every page shares
        with self._lock:
            return self._jobs.get(key)

    def job_for_run(self, run_dir: str | os.PathLike) -> Job | None:
        key = Path(run_dir).resolve()
        with self._lock:
            return self._jobs.get(key)

    def jobs(self, session: str | None = None) -> list[Job]:
        """Runs ``session`` follows (all runs of this manager when None), in the order the session took them."""
        with self._lock:
            found = [j for j in self._jobs.values() if session is None or session in j.sessions]
        if session is None:
            return sorted(found, key=lambda j: j.submitted_at)
        return sorted(found, key=lambda j: (j.sessions[session].get("at") or 0.0, j.submitted_at))

    def has_run_for(self, key: str) -> bool:
        """True when Train with this run key would follow an existing run rather than make a new one."""
        with self._lock:
            job = self._by_key.get(key)
            return job is not None and job.state in (QUEUED, RUNNING, FINISHED) and job.run_dir.is_dir()

    def slots_left(self, session: str, client: str | None = None) -> int:
        """How many more NEW runs ``session`` (from ``client``) may queue now (attaching is free)."""
        with self._lock:
            active = [j for j in self._jobs.values() if j.active]
            left = 1 << 30
            if self.max_per_session is not None:
                left = min(left, self.max_per_session - sum(1 for j in active if j.creator == session))
            if self.max_per_client is not None and client:
                left = min(left, self.max_per_client - sum(1 for j in active if j.client == client))
        return max(0, left)

    def queue_position(self, job_id: str) -> int | None:
        with self._lock:
            return self._queue.position(self.runs_dir / job_id)

    @property
    def running_count(self) -> int:
        with self._lock:
            return sum(1 for j in self._jobs.values() if j.state == RUNNING)

    @property
    def queued_count(self) -> int:
        with self._lock:
            return len(self._queue)

    def timing(self, dataset: str, hidden: int) -> Timing:
        """Measured epoch and set-up seconds for runs of this size (cached ``TIMING_TTL`` seconds)."""
        key = (dataset, hidden)
        now = time.monotonic()
        cached = self._timings.get(key)
        if cached is None or now - cached[0] > TIMING_TTL:
            with self._lock:
                configs = {j.run_dir: j.config for j in self._jobs.values()}
            cached = (now, measure(candidate_dirs(self.runs_dir), dataset, hidden, configs))
            self._timings[key] = cached
        return cached[1]

    def estimates(self) -> dict[str, dict]:
        """For every running and queued job: ``{"position", "start_in", "finish_in", "measured"}`` (seconds
        from now; position None while running)."""
        now = time.time()
        with self._lock:
            running = [j for j in self._jobs.values() if j.state == RUNNING]
            queued = [self._jobs[r] for r in self._queue.runs() if r in self._jobs]
        out: dict[str, dict] = {}
        left = []
        for job in running:
            timing = self.timing(job.config.get("dataset"), job.config.get("hidden"))
            status = read_json(job.run_dir / "status.json") or {}
            fraction = status.get("fraction") if isinstance(status.get("fraction"), (int, float)) else None
            rest = remaining(timing.duration(job.config.get("epochs", 1)), now - (job.started_at or now), fraction)
            left.append(rest)
            out[job.id] = {"position": None, "start_in": 0.0, "finish_in": rest, "measured": timing.measured}
        timings = [self.timing(j.config.get("dataset"), j.config.get("hidden")) for j in queued]
        durations = [t.duration(j.config.get("epochs", 1)) for t, j in zip(timings, queued)]
        for n, (job, timing, (start, finish)) in enumerate(zip(queued, timings, schedule(left, durations,
                                                                                              self.max_jobs))):
            out[job.id] = {"position": n + 1, "start_in": start, "finish_in": finish, "measured": timing.measured}
        return out

    # ----------------------------------------------------------------------------- control
    def cancel(self, job_id: str, session: str | None = None, *, teacher: bool = False) -> str:
        """Stop following or stop a run. Returns ``"unfollowed"`` (others still follow it: only ``session``
        lets go), ``"cancelled"`` (a queued run dropped), ``"stopping"`` (its worker stops at the next
        batch) or ``"unknown"`` (not active). ``session=None`` or ``teacher=True`` always stops it."""
        with self._lock:
            job = self.get(job_id)
            if job is None or not job.active:
                return "unknown"
            if session is not None and not teacher:
                if session not in job.sessions:
                    raise LapMusicError("this run was started by someone else; only they or the teacher can stop it")
                if len(job.sessions) > 1:
                    job.sessions.pop(session)
                    self._save_job(job)
                    return "unfollowed"
            if job.state == QUEUED:
                self._queue.remove(job.run_dir)
                job.state, job.finished_at = CANCELLED, time.time()
                self._write_status(job, state=CANCELLED, error=None, message="stopped before it started")
                return "cancelled"
            job.stopping = True
            try:
                (job.run_dir / CANCEL_FILE).touch()
            except OSError as exc:
                raise LapMusicError(f"could not ask {job.id} to stop ({exc}); is {job.run_dir} writable?") from exc
            return "stopping"

    def unfollow(self, job_id: str, session: str) -> None:
        """``session`` no longer lists this run as its own (the run itself goes on)."""
        with self._lock:
            job = self.get(job_id)
            if job is not None and job.sessions.pop(session, None) is not None:
                self._save_job(job)

    def delete(self, job_id: str, session: str | None = None, *, teacher: bool = False) -> None:
        """Delete a run folder that is not queued or running (yours alone, or any as the teacher)."""
        import shutil

        run_dir = (self.runs_dir / job_id).resolve()
        if run_dir.parent != self.runs_dir and self.runs_dir not in run_dir.parents:
            raise LapMusicError("only run folders inside the runs folder can be deleted")
        summary = summarize_run(run_dir, self)
        if summary is None:
            raise LapMusicError(f"{job_id} is not a run folder")
        if summary.state in ACTIVE_STATES:
            raise LapMusicError(f"{job_id} is {summary.state}; stop it before deleting it")
        with self._lock:
            job = self._jobs.get(run_dir)
            followers = set(job.sessions) if job is not None else set()
            if not teacher and (session is None or followers - {session} or job is None):
                raise LapMusicError("only the teacher can delete a run that others follow or the lapmusic command made")
            shutil.rmtree(run_dir, ignore_errors=True)
            self._jobs.pop(run_dir, None)
            if job is not None and job.key is not None and self._by_key.get(job.key) is job:
                del self._by_key[job.key]

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job is done (tests, scripts). Raises TimeoutError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job is None:
                raise KeyError(job_id)
            if not job.active:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout} s")
            self._wake.set()
            time.sleep(0.05)
