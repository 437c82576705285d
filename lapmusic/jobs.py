"""Background training jobs for the app: bounded concurrency, a FIFO queue, cancel, status on disk.

One :class:`JobManager` per server process (the app keeps it in ``st.cache_resource``). Training runs
in worker threads, never in the Streamlit script thread, so pages stay responsive and any number of
browser sessions can poll the same manager. At most ``max_jobs`` run at once (``LAPMUSIC_MAX_JOBS``,
default 1: a laptop CPU gains nothing from two trainings fighting for the same cores); extra jobs
wait in a FIFO queue and report their position.

The run folder on disk is the source of truth (see docs/architecture.md): the manager writes
``config.json`` and ``status.json`` ("queued") when a job is submitted, the training function writes
the rest, and when a job fails the manager records the error in ``status.json`` too. So after a
page refresh or a server restart :func:`list_runs` still finds every run, and a run that was
``running`` when its server died is reported as ``interrupted`` (it can be resumed).

No Streamlit here: this module is tested with a fake training function.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import LapMusicError
from .io import atomic_write_json, read_json, read_jsonl  # noqa: F401 (read_jsonl: kept for importers)

log = logging.getLogger(__name__)

QUEUED, RUNNING, FINISHED, CANCELLED, FAILED = "queued", "running", "finished", "cancelled", "failed"
INTERRUPTED = "interrupted"
"""A run whose status.json says running/queued but that no live job of this process owns
(its server stopped). Reported by :func:`list_runs`, never written to disk."""

ACTIVE_STATES = (QUEUED, RUNNING)
STALE_SECONDS = 300.0
"""A queued/running status.json not owned by this process counts as live (another server, or the
``lapmusic`` command, is on it) while it was updated this recently; after that the run is interrupted."""
DONE_STATES = (FINISHED, CANCELLED, FAILED)

TrainFunction = Callable[..., Any]
"""``train(config, run_dir, *, progress=None, cancel=None, resume=False) -> dict`` (lapmusic.train)."""


def default_runs_dir() -> Path:
    """``$LAPMUSIC_RUNS_DIR`` or ``./runs``: the same folder the CLI writes run folders into."""
    return Path(os.environ.get("LAPMUSIC_RUNS_DIR") or "runs")


def default_max_jobs() -> int:
    """``$LAPMUSIC_MAX_JOBS`` (at least 1), default 1."""
    text = os.environ.get("LAPMUSIC_MAX_JOBS", "").strip()
    try:
        return max(1, int(text)) if text else 1
    except ValueError:
        log.warning("ignoring LAPMUSIC_MAX_JOBS=%r (not an integer)", text)
        return 1


def default_max_per_session() -> int | None:
    """``$LAPMUSIC_MAX_JOBS_PER_SESSION``: queued + running jobs one browser session may have (default 2,
    one LAE/random pair, so one eager student cannot fill a classroom's queue); 0 = no limit."""
    text = os.environ.get("LAPMUSIC_MAX_JOBS_PER_SESSION", "").strip()
    try:
        value = int(text) if text else 2
    except ValueError:
        log.warning("ignoring LAPMUSIC_MAX_JOBS_PER_SESSION=%r (not an integer)", text)
        value = 2
    return None if value <= 0 else value


def _default_train(config, run_dir, *, progress=None, cancel=None, resume=False, dataset=None):
    from .train import train  # imported lazily: torch is heavy and tests use a fake

    return train(config, run_dir, progress=progress, cancel=cancel, resume=resume, dataset=dataset)


# --------------------------------------------------------------------------------- shared datasets
def dataset_token(key: str) -> str:
    """Identifies one version of a dataset: the key, plus the file's mtime for ``user:NAME`` datasets
    (so that rebuilding an upload under the same name is not served from memory)."""
    if not key.startswith("user:"):
        return key
    from .data import slugify, user_dir

    path = user_dir() / f"{slugify(key.removeprefix('user:'))}.npz"
    try:
        return f"{key}@{path}@{path.stat().st_mtime_ns}"
    except OSError:
        return key


class _Loading:
    """One dataset being loaded (or loaded) in its own thread; any number of callers can wait on it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.fraction = 0.0
        self.message = "starting"
        self.result = None
        self.error: BaseException | None = None

    def update(self, fraction: float, message: str) -> None:
        self.fraction, self.message = float(fraction), str(message)

    def wait(self, progress=None, poll: float = 0.25):
        while not self.done.wait(poll):
            if progress is not None:
                progress(self.fraction, self.message)
        if self.error is not None:
            raise self.error
        return self.result


class DatasetCache:
    """Datasets loaded once per process and shared by every page and job (a classroom uses the same one).

    A load runs in its own thread, so a caller that gives up waiting (a Streamlit rerun) does not abort
    it, and concurrent callers (the Data page and a training job, both asking for the one-minute Bach
    build) wait for the same load instead of doing it twice. A failed load is retried by the next call.
    """

    def __init__(self, loader: Callable[..., Any] | None = None):
        self._loader = loader
        self._lock = threading.Lock()
        self._entries: dict[str, _Loading] = {}

    def start(self, key: str) -> _Loading:
        """Begin loading ``key`` unless it is loaded or loading; returns the entry to wait on."""
        token = dataset_token(key)
        with self._lock:
            entry = self._entries.get(token)
            if entry is not None and not (entry.done.is_set() and entry.error is not None):
                return entry
            entry = _Loading()
            self._entries[token] = entry
        threading.Thread(target=self._load, args=(key, entry), name=f"lapmusic-load-{key}", daemon=True).start()
        return entry

    def get(self, key: str, progress=None):
        """The dataset ``key`` (a ``lapmusic.data.Dataset``); ``progress(fraction, message)`` while it loads."""
        return self.start(key).wait(progress)

    def _load(self, key: str, entry: _Loading) -> None:
        loader = self._loader
        if loader is None:
            from .data import load_dataset as loader
        try:
            entry.result = loader(key, progress=entry.update)
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter
            entry.error = exc
        finally:
            entry.done.set()


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


def run_folder_name(config: dict, *, now: datetime | None = None) -> str:
    """``20261126-121500-bach-h128-lae-s0-1a2b``: sortable by time, readable, unique."""
    now = now or datetime.now()
    parts = [
        now.strftime("%Y%m%d-%H%M%S"),
        str(config.get("dataset", "run")),
        f"h{config['hidden']}" if "hidden" in config else "",
        str(config.get("init", "")),
        f"s{config['seed']}" if "seed" in config else "",
        uuid.uuid4().hex[:4],
    ]
    name = "-".join(p for p in parts if p)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)  # user:NAME -> user_NAME


@dataclass
class Job:
    """One training job. Read its fields; change it only through the :class:`JobManager`."""

    id: str
    run_dir: Path
    config: Any
    session: str | None
    label: str
    group: str | None
    resume: bool
    state: str = QUEUED
    error: str | None = None
    result: dict | None = None
    fraction: float = 0.0
    message: str = "waiting in the queue"
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def elapsed(self) -> float:
        """Seconds spent running (0 while queued)."""
        if self.started_at is None:
            return 0.0
        return (self.finished_at or time.time()) - self.started_at

    @property
    def eta_seconds(self) -> float | None:
        """Remaining seconds, extrapolated from the progress so far; None when unknown."""
        # A few seconds of history before extrapolating: the first progress reports are too noisy.
        if self.state != RUNNING or self.fraction <= 0.001 or self.started_at is None or self.elapsed < 3.0:
            return None
        return self.elapsed * (1.0 - self.fraction) / self.fraction


class JobManager:
    """Runs training jobs in background threads, at most ``max_jobs`` at a time, the rest queued FIFO.

    ``train_fn`` defaults to :func:`lapmusic.train.train`; tests pass a fake with the same signature.
    Thread-safe: every public method may be called from any Streamlit session thread.
    """

    def __init__(
        self,
        runs_dir: str | os.PathLike | None = None,
        *,
        max_jobs: int | None = None,
        max_per_session: int | None | str = "env",
        train_fn: TrainFunction | None = None,
        datasets: DatasetCache | None = None,
    ):
        self.runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
        self.max_jobs = max(1, int(max_jobs)) if max_jobs is not None else default_max_jobs()
        self.max_per_session = default_max_per_session() if max_per_session == "env" else max_per_session
        self._train_fn = train_fn or _default_train
        self.datasets = datasets
        """When given, jobs take their data from this shared cache (``train(..., dataset=...)``)."""
        self._lock = threading.RLock()
        self._jobs: dict[str, Job] = {}
        self._queue: collections.deque[str] = collections.deque()
        self._running: set[str] = set()
        self._threads: dict[str, threading.Thread] = {}

    # ----------------------------------------------------------------------------- submitting
    def submit(
        self,
        config: Any,
        *,
        session: str | None = None,
        run_dir: str | os.PathLike | None = None,
        resume: bool = False,
        label: str | None = None,
        group: str | None = None,
    ) -> Job:
        """Queue a training job and start it as soon as a slot is free.

        ``config``: a TrainConfig (or dict); ``run_dir``: default a new folder under ``runs_dir``;
        ``resume``: continue the run in ``run_dir`` from its checkpoint; ``group``: jobs started
        together (LAE and random side by side) share it. Raises LapMusicError when ``session`` already
        has ``max_per_session`` jobs queued or running.
        """
        config_dict = config_to_dict(config)
        if resume:
            if run_dir is None:
                raise LapMusicError("resuming needs the run folder to continue")
            run_dir = Path(run_dir)
            if not (run_dir / "config.json").is_file():
                raise LapMusicError(f"{run_dir} is not a run folder (no config.json); choose another run")
        else:
            run_dir = Path(run_dir) if run_dir is not None else self.runs_dir / run_folder_name(config_dict)
        run_dir = run_dir.resolve()
        with self._lock:
            if session is not None and self.slots_left(session) <= 0:
                raise LapMusicError(
                    f"you already have {self.max_per_session} runs queued or training; "
                    "wait for one to finish or stop it, then start another"
                )
            for other in self._jobs.values():
                if other.active and other.run_dir == run_dir:
                    raise LapMusicError(f"run {run_dir.name} is already {other.state}; wait for it or stop it first")
            job = Job(
                id=uuid.uuid4().hex[:12],
                run_dir=run_dir,
                config=config,
                session=session,
                label=label or _default_label(config_dict),
                group=group,
                resume=resume,
            )
            self._jobs[job.id] = job
            self._queue.append(job.id)
        if not resume:
            atomic_write_json(run_dir / "config.json", config_dict)
        self._write_status(job, {"state": QUEUED, "error": None, "message": job.message})
        self._start_waiting_jobs()
        return job

    # ----------------------------------------------------------------------------- querying
    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def jobs(self, session: str | None = None) -> list[Job]:
        """Jobs of one browser session (all jobs when ``session`` is None), oldest first."""
        with self._lock:
            found = [j for j in self._jobs.values() if session is None or j.session == session]
        return sorted(found, key=lambda j: j.submitted_at)

    def slots_left(self, session: str) -> int:
        """How many more jobs ``session`` may submit now (a large number when there is no limit)."""
        if self.max_per_session is None:
            return 1 << 30
        with self._lock:
            active = sum(1 for j in self._jobs.values() if j.session == session and j.active)
        return max(0, self.max_per_session - active)

    def queue_position(self, job_id: str) -> int | None:
        """1 for the next job to start, 2 after it, ...; None when the job is not waiting."""
        with self._lock:
            try:
                return list(self._queue).index(job_id) + 1
            except ValueError:
                return None

    def job_for_run(self, run_dir: str | os.PathLike) -> Job | None:
        """The newest job of this process that trains ``run_dir``, if any."""
        target = Path(run_dir).resolve()
        with self._lock:
            matches = [j for j in self._jobs.values() if j.run_dir == target]
        return max(matches, key=lambda j: j.submitted_at) if matches else None

    @property
    def running_count(self) -> int:
        with self._lock:
            return len(self._running)

    @property
    def queued_count(self) -> int:
        with self._lock:
            return len(self._queue)

    # ----------------------------------------------------------------------------- control
    def cancel(self, job_id: str) -> bool:
        """Stop a job: a queued one is dropped at once, a running one stops at its next check.

        Returns False when the job is unknown or already done.
        """
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or not job.active:
                return False
            job.cancel_event.set()
            if job.state == QUEUED and job_id in self._queue:
                self._queue.remove(job_id)
                job.state = CANCELLED
                job.message = "stopped before it started"
                job.finished_at = time.time()
                dropped = True
            else:
                job.message = "stopping after the current step..."
                dropped = False
        if dropped:
            self._write_status(job, {"state": CANCELLED, "error": None, "message": job.message})
        return True

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job is done (tests, scripts). Raises TimeoutError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                job = self._jobs.get(job_id)
                thread = self._threads.get(job_id)
            if job is None:
                raise KeyError(job_id)
            if not job.active and thread is None:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout} s")
            if thread is not None:
                thread.join(timeout=0.2)
            else:
                time.sleep(0.02)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel everything and wait for the worker threads (tests; servers just exit)."""
        with self._lock:
            ids = list(self._jobs)
        for job_id in ids:
            self.cancel(job_id)
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    # ----------------------------------------------------------------------------- internals
    def _start_waiting_jobs(self) -> None:
        with self._lock:
            while self._queue and len(self._running) < self.max_jobs:
                job = self._jobs[self._queue.popleft()]
                job.state = RUNNING
                job.started_at = time.time()
                job.message = "starting"
                self._running.add(job.id)
                thread = threading.Thread(
                    target=self._run_job, args=(job,), name=f"lapmusic-job-{job.id}", daemon=True
                )
                self._threads[job.id] = thread
                thread.start()

    def _run_job(self, job: Job) -> None:
        def progress(fraction: float, message: str) -> None:
            job.fraction = max(0.0, min(1.0, float(fraction)))
            if not job.cancel_event.is_set():
                job.message = str(message)

        try:
            try:
                self._write_status(job, {"state": RUNNING, "error": None, "message": "starting"})
                extra = {}
                if self.datasets is not None:
                    key = str(config_to_dict(job.config).get("dataset"))
                    extra["dataset"] = self.datasets.get(
                        key, progress=lambda f, m: progress(0.0, f"loading {key}: {m}")
                    )
                result = self._train_fn(
                    job.config, job.run_dir, progress=progress, cancel=job.cancel_event, resume=job.resume, **extra
                )
            except LapMusicError as exc:
                self._finish(job, FAILED, error=str(exc))
            except Exception as exc:  # noqa: BLE001 - a job's bug must not kill the manager
                log.exception("training job %s failed", job.id)
                self._finish(job, FAILED, error=f"unexpected error ({type(exc).__name__}: {exc})")
            else:
                result = result if isinstance(result, dict) else {}
                state = result.get("state")
                if state not in DONE_STATES:
                    state = CANCELLED if job.cancel_event.is_set() else FINISHED
                self._finish(job, state, result=result, error=result.get("error"))
        finally:
            with self._lock:
                self._running.discard(job.id)
                self._threads.pop(job.id, None)
            self._start_waiting_jobs()

    def _finish(self, job: Job, state: str, *, error: str | None = None, result: dict | None = None) -> None:
        with self._lock:
            job.state = state
            job.error = error if state == FAILED else None
            job.result = result
            job.finished_at = time.time()
            if state == FINISHED:
                job.fraction = 1.0
                job.message = "finished"
            elif state == CANCELLED:
                job.message = "stopped; the best model so far is kept"
            else:
                job.message = "failed"
        if state == FAILED:
            # The training function may have died before writing its own failure record.
            self._write_status(job, {"state": FAILED, "error": error, "message": "failed"})
        else:
            status = read_json(job.run_dir / "status.json") or {}
            if status.get("state") != state:
                self._write_status(job, {"state": state, "error": None})

    def _write_status(self, job: Job, update: dict) -> None:
        path = job.run_dir / "status.json"
        status = read_json(path) or {}
        status.update(update)
        status["updated"] = time.time()
        status.setdefault("epoch", 0)
        status.setdefault("epochs", config_to_dict(job.config).get("epochs"))
        try:
            atomic_write_json(path, status)
        except OSError:
            log.exception("could not write %s", path)


def _default_label(config: dict) -> str:
    init = {"lae": "LAE", "random": "random"}.get(str(config.get("init")), str(config.get("init", "")))
    bits = [init, f"h{config['hidden']}" if "hidden" in config else "", f"seed {config['seed']}" if "seed" in config else ""]
    return " ".join(b for b in bits if b)


# --------------------------------------------------------------------------------- run folders on disk
@dataclass
class RunSummary:
    """What the Runs page lists about one run folder."""

    run_dir: Path
    config: dict
    status: dict
    state: str
    final: dict | None
    epochs_done: int  # the last epoch in metrics.jsonl (epoch 0 is the untrained network)
    modified: float
    owner: Job | None = None  # the live job of this process training it, if any

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def has_model(self) -> bool:
        """A model to sample from exists (best so far or last checkpoint)."""
        return (self.run_dir / "best.pt").is_file() or (self.run_dir / "checkpoint.pt").is_file()

    @property
    def elsewhere(self) -> bool:
        """Queued or running, but in another process (its status.json is fresh and no job here owns it)."""
        return self.state in ACTIVE_STATES and self.owner is None

    @property
    def resumable(self) -> bool:
        return self.state in (CANCELLED, FAILED, INTERRUPTED) and (self.run_dir / "checkpoint.pt").is_file()

    @property
    def started(self) -> str:
        return datetime.fromtimestamp(self.modified, tz=timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M")


DAMAGED = "damaged"
"""A run folder whose config.json or status.json cannot be used; :func:`summarize_run` puts the reason in
``status["error"]``. Reported by :func:`list_runs`, never written to disk."""


def summarize_run(run_dir: str | os.PathLike, manager: JobManager | None = None) -> RunSummary | None:
    """Read one run folder; None when it is not a run folder. Never raises on a bad folder: a config.json
    or status.json that cannot be used gives state ``damaged`` with the reason in ``status["error"]``, and
    malformed metrics lines are skipped."""
    from .lock import lock_owner
    from .rundir import inspect_history, read_config_dict

    run_dir = Path(run_dir)
    config, problem = read_config_dict(run_dir)
    if config is None:
        return None
    status = read_json(run_dir / "status.json") or {}
    if problem is None and not isinstance(status.get("state"), (str, type(None))):
        problem = f"status.json: state is {status.get('state')!r}, not a string"
    state = str(status.get("state") or (FINISHED if (run_dir / "final.json").is_file() else INTERRUPTED))
    job = manager.job_for_run(run_dir) if manager is not None else None
    owner = job if job is not None and job.active else None
    if state in ACTIVE_STATES:
        if owner is None:
            updated = status.get("updated")
            recent = isinstance(updated, (int, float)) and time.time() - updated < STALE_SECONDS
            # A process holding the folder's writer lock is alive, however long since its last update.
            if not recent and lock_owner(run_dir) is None:
                state = INTERRUPTED
    metrics, _ = inspect_history(run_dir)  # malformed lines skipped
    if problem is not None:
        state, status = DAMAGED, {**status, "state": DAMAGED, "error": problem}
    try:
        modified = (run_dir / "config.json").stat().st_mtime
    except OSError:
        modified = 0.0
    return RunSummary(
        run_dir=run_dir,
        config=config,
        status=status,
        state=state,
        final=read_json(run_dir / "final.json"),
        epochs_done=max((row["epoch"] for row in metrics), default=0),
        modified=modified,
        owner=owner,
    )


def list_runs(runs_dir: str | os.PathLike | None = None, manager: JobManager | None = None) -> list[RunSummary]:
    """Every run folder directly under ``runs_dir`` (or one level deeper, as ``lapmusic compare``
    writes them), newest first. One unreadable folder is listed as damaged; it never hides the others."""
    root = Path(runs_dir) if runs_dir is not None else (manager.runs_dir if manager else default_runs_dir())
    if not root.is_dir():
        return []
    found: list[RunSummary] = []
    for child in _candidate_dirs(root):
        try:
            summary = summarize_run(child, manager)
        except Exception as exc:  # noqa: BLE001 - one bad folder must not break every user's page
            log.warning("run folder %s is unreadable: %s", child, exc)
            summary = RunSummary(run_dir=child, config={}, status={"state": DAMAGED, "error": f"unreadable: {exc}"},
                                 state=DAMAGED, final=None, epochs_done=0, modified=0.0)
        if summary is not None:
            found.append(summary)
    return sorted(found, key=lambda r: (r.modified, r.name), reverse=True)


def _is_run_dir(path: Path) -> bool:
    try:
        return path.is_dir() and not path.name.startswith(".") and (path / "config.json").is_file()
    except OSError:
        return False


def _candidate_dirs(root: Path) -> Iterable[Path]:
    try:
        children = [c for c in root.iterdir() if not c.name.startswith(".")]
    except OSError:
        return []
    out = []
    for child in children:
        try:
            if not child.is_dir():
                continue
        except OSError:
            continue
        if _is_run_dir(child):
            out.append(child)
        else:
            try:
                out.extend(g for g in child.iterdir() if _is_run_dir(g))
            except OSError:
                continue
    return out
