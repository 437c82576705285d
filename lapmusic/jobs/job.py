"""One run the app's job manager queues, trains or has trained."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from lapmusic.jobs.runs import (
    ACTIVE_STATES,
    QUEUED,
    run_title,
)


# ------------------------------------------------------------------------------ jobs
@dataclass
class Job:
    """One run this server queues, trains or has trained. Read its fields; change it through the manager."""

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
    pid: int | None = None
    gpu: int | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)
    stopping: bool = False

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
        return (self.sessions.get(session) or {}).get("group") if session else None

    def to_file(self) -> dict:
        return {"key": self.key, "submitted": self.submitted_at, "creator": self.creator, "client": self.client,
                "student": self.student, "sessions": self.sessions, "attempts": self.attempts}
