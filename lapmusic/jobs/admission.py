"""Admitting a Train press: its runs queued whole or not at all.

A press asks for a group of runs (an LAE/random pair). Under the job manager's lock, :func:`admit` sorts them
into runs that exist (the session follows them, free) and new runs, checks the quotas for all the new runs
together, and only then writes and queues them; a run folder that cannot be written undoes the ones made
before it. So two sessions from one computer pressing Train at once cannot each get half a pair.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lapmusic.core.errors import LapMusicError
from lapmusic.jobs.job import Job
from lapmusic.jobs.limits import Quotas, client_address
from lapmusic.jobs.queue import PersistentQueue
from lapmusic.jobs.runs import ACTIVE_STATES, DONE_STATES, RUNNING, RunSummary, run_folder_name, run_key
from lapmusic.jobs.table import JobTable


@dataclass(frozen=True)
class Request:
    """Who presses Train, and for which group (see :meth:`lapmusic.jobs.manager.JobManager.submit_group`)."""

    session: str | None
    client: str | None
    student: str | None
    group: str | None


def admit(table: JobTable, queue: PersistentQueue, quotas: Quotas, runs_dir: Path, configs: list[dict],
          request: Request, *, cuda: bool, run_dirs: list | None = None) -> list[Job]:
    """Queue the new runs of ``configs`` and attach ``request.session`` to the existing ones; call under the
    manager's lock.

    Parameters
    ----------
    table, queue : JobTable, PersistentQueue
        The manager's jobs and queue.
    quotas : Quotas
        Checked once for all the new runs of the group.
    runs_dir : Path
        Where new run folders go unless ``run_dirs`` names them.
    configs : list of dict
        The runs' configs (``TrainConfig.to_dict()``), in the order the jobs are returned.
    request : Request
        Who asks.
    cuda : bool
        Whether runs train on a GPU (part of the run key).
    run_dirs : list of path or None, optional
        A folder for each config (None: a fresh one under ``runs_dir``).

    Returns
    -------
    list of Job
        One per config: the new job or the queued, running or finished one with the same run key.

    Raises
    ------
    LapMusicError
        When the quotas do not leave room for every new run, or a folder already holds a run; nothing is
        queued or followed then.
    TypeError
        When a config is not a dict.
    """
    for config in configs:
        if not isinstance(config, dict):
            raise TypeError(f"a run's config is a dict (TrainConfig.to_dict()), not {type(config).__name__}")
    configs = [dict(c) for c in configs]
    client = client_address(request.client)
    keys = [run_key(c, cuda=cuda) for c in configs]
    fresh = {k for k in keys if table.for_key(k) is None}  # two identical configs in one group: one run
    quotas.check(table.in_state(*ACTIVE_STATES), request.session, client, new=len(fresh))
    folders = run_dirs or [None] * len(configs)
    made: dict[str, Job] = {}
    try:
        for config, key, folder in zip(configs, keys, folders):
            if key in fresh and key not in made:
                target = Path(folder) if folder is not None else runs_dir / run_folder_name(
                    config, student=request.student)
                made[key] = Job.create(target.resolve(), config, key, session=request.session, client=client,
                                       student=request.student, group=request.group)
    except BaseException:
        for job in made.values():  # half a group is no group: undo the runs made before the failure
            if run_dirs is None:
                shutil.rmtree(job.run_dir, ignore_errors=True)
            else:  # a folder the caller chose may hold its own files: remove only what Job.create wrote
                for name in ("config.json", "job.json", "status.json"):
                    (job.run_dir / name).unlink(missing_ok=True)
        raise
    out = []
    for key in keys:
        if key in made:
            job = made[key]
            if table.for_key(key) is None:  # the same config twice in one group: one run, queued once
                table.add(job)
                queue.append(job.run_dir, job.submitted_at)
        else:
            job = table.for_key(key)
            if request.session is not None:
                job.follow(request.session, request.group)
                job.save()
        out.append(job)
    return out


def readmit(table: JobTable, queue: PersistentQueue, quotas: Quotas, run_dir: Path, config: dict,
            summary: RunSummary | None, request: Request, *, reap: Callable[[Job], None]) -> Job:
    """Queue the stopped run in ``run_dir`` again (a resume); call under the manager's lock.

    ``summary`` is the run folder's :func:`~lapmusic.jobs.runs.summarize_run`, ``reap`` the scheduler's
    record of a worker that has just ended. Returns the run's job, which ``request.session`` created now.

    Raises
    ------
    LapMusicError
        When the run is active, has no checkpoint, or the quotas leave no room.
    """
    job = table.get(run_dir)
    if job is not None and job.state == RUNNING and summary is not None and summary.state in DONE_STATES:
        reap(job)  # its worker has written its last status and is exiting right now
    if summary is not None and summary.state in ACTIVE_STATES or (job is not None and job.active):
        raise LapMusicError(f"run {run_dir.name} is already {summary.state if summary else job.state}; "
                            "wait for it or stop it first")
    if not (run_dir / "checkpoint.pt").is_file():
        raise LapMusicError(f"run {run_dir.name} has no checkpoint to resume from; start a new run")
    client = client_address(request.client)
    quotas.check(table.in_state(*ACTIVE_STATES), request.session, client)
    if job is None:  # a run of the lapmusic command, resumed from the app: managed from now on
        job = Job(run_dir=run_dir, config=config, key=None, submitted_at=time.time())
    job.requeue(request.session, client, request.group)
    queue.append(run_dir, time.time())
    table.add(job)
    return job
