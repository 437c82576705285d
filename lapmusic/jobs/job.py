"""One run the app's job manager queues, trains or has trained: who follows it, its files, how it ended.

A job's own files in its run folder: ``job.json`` (:meth:`Job.to_file`: key, submission time, creator,
client, student, followers, attempts) and the manager's fields of ``status.json`` (state, message, error).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from lapmusic.core.errors import LapMusicError
from lapmusic.core.io import atomic_write_json, read_json
from lapmusic.jobs.runs import (
    ACTIVE_STATES,
    DONE_STATES,
    FAILED,
    INTERRUPTED,
    JOB_FILE,
    QUEUED,
    clean_student,
    run_title,
)

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
"""A job whose worker dies before its first checkpoint is re-queued; after this many deaths it fails."""


@dataclass
class Job:
    """One run this server queues, trains or has trained. Read its fields; the manager changes them."""

    run_dir: Path
    config: dict
    key: str | None
    submitted_at: float
    creator: str | None = None  # the session that made the run (quota)
    client: str | None = None  # its client IP (quota), None on the server machine
    student: str = ""
    sessions: dict = field(default_factory=dict)  # session -> {"group", "at"}: who follows it
    state: str = QUEUED
    error: str | None = None
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def id(self) -> str:
        return self.run_dir.name

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def label(self) -> str:
        return run_title(self.config, self.submitted_at, self.student)

    def group_of(self, session: str | None) -> str | None:
        """The group (one Train press) under which ``session`` follows this run; None if it does not."""
        return (self.sessions.get(session) or {}).get("group") if session else None

    def follow(self, session: str | None, group: str | None) -> None:
        """``session`` follows this run from now on (in ``job.json`` only when the caller saves it)."""
        if session is not None:
            self.sessions[session] = {"group": group, "at": time.time()}

    def let_go(self, session: str) -> bool:
        """Stop pressed by ``session``: True when others follow the run too, so that only ``session`` stops
        following it (saved); False when it is the last follower and the run must stop.

        Raises
        ------
        LapMusicError
            When ``session`` does not follow this run.
        """
        if session not in self.sessions:
            raise LapMusicError("this run was started by someone else; only they or the teacher can stop it")
        if len(self.sessions) == 1:
            return False
        self.sessions.pop(session)
        self.save()
        return True

    # ------------------------------------------------------------------------------ its files
    @classmethod
    def create(cls, run_dir: Path, config: dict, key: str, *, session: str | None, client: str | None,
               student: str | None, group: str | None) -> "Job":
        """A new queued job in ``run_dir``, which ``session`` follows: writes ``config.json``, ``job.json`` and
        ``status.json``.

        Raises
        ------
        LapMusicError
            When ``run_dir`` already holds a run.
        """
        if (run_dir / "config.json").exists():
            raise LapMusicError(f"{run_dir.name} already holds a run; choose another folder")
        job = cls(run_dir=run_dir, config=config, key=key, submitted_at=time.time(), creator=session, client=client,
                  student=clean_student(student))
        job.follow(session, group)
        atomic_write_json(run_dir / "config.json", config)
        job.save()
        job.write_status(state=QUEUED, error=None, message="waiting in the queue")
        return job

    def requeue(self, session: str | None, client: str | None, group: str | None) -> None:
        """Queue this stopped run again (a resume): ``session`` is its creator from now on, and its attempts
        count from zero."""
        self.creator, self.client, self.state, self.error, self.attempts = session, client, QUEUED, None, 0
        self.follow(session, group)
        self.save()
        self.write_status(state=QUEUED, error=None, message="waiting in the queue (resume)")

    @classmethod
    def from_folder(cls, run_dir: Path) -> "Job | None":
        """The job of a run folder as the manager left it; None for a folder without ``job.json`` (a run
        of the ``lapmusic`` command). A state that is neither active nor done reads as interrupted."""
        info = read_json(run_dir / JOB_FILE)
        config = read_json(run_dir / "config.json")
        if info is None or config is None:
            return None
        job = cls(run_dir=run_dir.resolve(), config=config, key=info.get("key"),
                  submitted_at=float(info.get("submitted") or 0.0), creator=info.get("creator"),
                  client=info.get("client"), student=clean_student(info.get("student")),
                  sessions=dict(info.get("sessions") or {}), attempts=int(info.get("attempts") or 0))
        job.state = str((read_json(run_dir / "status.json") or {}).get("state") or QUEUED)
        if job.state not in DONE_STATES + ACTIVE_STATES:
            job.state = INTERRUPTED
        return job

    def to_file(self) -> dict:
        return {"key": self.key, "submitted": self.submitted_at, "creator": self.creator, "client": self.client,
                "student": self.student, "sessions": self.sessions, "attempts": self.attempts}

    def save(self) -> None:
        """Write ``job.json`` (a failed write is logged: the run itself goes on)."""
        try:
            atomic_write_json(self.run_dir / JOB_FILE, self.to_file())
        except OSError:
            log.exception("could not write %s", self.run_dir / JOB_FILE)

    def write_status(self, **fields) -> None:
        """Update ``status.json`` with ``fields`` (the worker writes the training's own fields)."""
        path = self.run_dir / "status.json"
        status = read_json(path) or {}
        status.update(fields)
        status["updated"] = time.time()
        status.setdefault("epoch", 0)
        status.setdefault("epochs", self.config.get("epochs"))
        try:
            atomic_write_json(path, status)
        except OSError:
            log.exception("could not write %s", path)

    # ------------------------------------------------------------------------------ how its worker ended
    def worker_exited(self) -> bool:
        """Its worker process is gone: take the final state from ``status.json``. Returns True when the
        job must go back to the front of the queue (see :meth:`worker_lost`)."""
        status = read_json(self.run_dir / "status.json") or {}
        state = status.get("state")
        self.finished_at = time.time()
        if state in DONE_STATES:
            self.state, self.error = state, status.get("error") if state == FAILED else None
            return False
        return self.worker_lost()

    def worker_lost(self) -> bool:
        """Its worker died without a final word (killed). With a checkpoint the run is interrupted and
        resumable; without one it is re-queued (returns True), and fails after :data:`MAX_ATTEMPTS` deaths."""
        if (self.run_dir / "checkpoint.pt").is_file():
            self.state = INTERRUPTED
            return False
        self.attempts += 1
        self.save()
        if self.attempts >= MAX_ATTEMPTS:
            self.state = FAILED
            self.error = (f"its worker stopped {self.attempts} times before the first checkpoint; "
                          f"see {self.run_dir / 'worker.log'}")
            self.write_status(state=FAILED, error=self.error, message="failed")
            return False
        self.state = QUEUED
        self.write_status(state=QUEUED, error=None, message="re-queued: its worker stopped before the first "
                          "checkpoint")
        return True
