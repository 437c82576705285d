"""The jobs of one runs folder, by run folder and by run key (which run Train with a given key follows)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from lapmusic.jobs.job import Job
from lapmusic.jobs.runs import FINISHED, QUEUED, RUNNING

USABLE_STATES = (QUEUED, RUNNING, FINISHED)
"""A run in one of these states is followed by Train with its key rather than trained again."""


class JobTable:
    """Jobs by resolved run folder, and the usable job of each run key (not thread-safe: the job manager's
    lock guards it)."""

    def __init__(self):
        self._jobs: dict[Path, Job] = {}
        self._by_key: dict[str, Job] = {}

    def __iter__(self) -> Iterator[Job]:
        return iter(list(self._jobs.values()))

    def get(self, run_dir: Path) -> Job | None:
        return self._jobs.get(run_dir)

    def add(self, job: Job) -> None:
        self._jobs[job.run_dir] = job
        self.index(job)

    def remove(self, job: Job) -> None:
        self._jobs.pop(job.run_dir, None)
        if job.key is not None and self._by_key.get(job.key) is job:
            del self._by_key[job.key]

    def index(self, job: Job) -> None:
        """Remember ``job`` as the run for its key (an active or finished run beats a stopped one); call it
        again when its state changed."""
        if job.key is None:
            return
        current = self._by_key.get(job.key)
        if current is None or (job.state in USABLE_STATES and (current.state not in USABLE_STATES
                                                               or job.submitted_at >= current.submitted_at)):
            self._by_key[job.key] = job

    def for_key(self, key: str) -> Job | None:
        """The queued, running or finished job with this run key whose folder still exists, else None."""
        job = self._by_key.get(key)
        return job if job is not None and job.state in USABLE_STATES and job.run_dir.is_dir() else None

    def in_state(self, *states: str) -> list[Job]:
        return [j for j in self._jobs.values() if j.state in states]

    def followed_by(self, session: str | None) -> list[Job]:
        """The jobs ``session`` follows in the order it took them (every job by submission time for None)."""
        if session is None:
            return sorted(self._jobs.values(), key=lambda j: j.submitted_at)
        found = [j for j in self._jobs.values() if session in j.sessions]
        return sorted(found, key=lambda j: (j.sessions[session].get("at") or 0.0, j.submitted_at))

    def configs(self) -> dict[Path, dict]:
        return {j.run_dir: j.config for j in self._jobs.values()}
