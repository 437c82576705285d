"""Train a grid's runs through an engine: each run a ``python -m lapmusic.jobs.worker RUNDIR`` process.

The engines differ only in where those processes run: :class:`LocalEngine` (threads here, each waiting on its
child) or :class:`lapmusic.jobs.rayexec.RayEngine` (one Ray task per run, with its CPU and GPU share). The
worker resumes from ``checkpoint.pt``, so :func:`run_grid` retries a failed or killed run (up to ``retries``
times) and it continues where it stopped; a run that still fails is reported, never fatal to the grid. Only
``RUNDIR/cancel`` stops a run for good: one stopped by a signal without it (a node cleaning up after its Ray
worker died, a shutdown) is retried like a killed one. A finished run with the same config is skipped, so a
second sweep over the same folder only writes the table.
"""

from __future__ import annotations

import json
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from lapmusic.core.errors import LapMusicError
from lapmusic.core.io import atomic_write_json, read_json
from lapmusic.jobs.command import run_command
from lapmusic.jobs.grid import saved_config, summarise
from lapmusic.jobs.worker import CANCEL_FILE
from lapmusic.training.config import TrainConfig


class Engine(Protocol):
    """Where a grid's commands run: :class:`LocalEngine` or :class:`lapmusic.jobs.rayexec.RayEngine`."""

    capacity: int  # commands in flight at once (the rest wait in the runner)
    name: str

    def submit(self, argv: list[str], log_path: Path, wait_free: Path | None = None): ...

    def wait(self, handles: list, timeout: float) -> list: ...

    def result(self, handle) -> tuple[int | None, str | None]: ...

    def close(self) -> None: ...


class LocalEngine:
    """``jobs`` commands at once on this machine, each ``threads`` torch threads."""

    name = "local"

    def __init__(self, jobs: int, threads: int):
        self.capacity = max(1, jobs)
        self.env = {"LAPMUSIC_WORKER_THREADS": str(max(1, threads)), "OMP_NUM_THREADS": str(max(1, threads))}
        self._pool = ThreadPoolExecutor(max_workers=self.capacity, thread_name_prefix="lapmusic-sweep")

    def submit(self, argv, log_path, wait_free=None):
        return self._pool.submit(run_command, argv, str(log_path), self.env, str(wait_free) if wait_free else None)

    def wait(self, handles, timeout):
        done, _ = wait_futures(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        return list(done)

    def result(self, handle):
        try:
            return handle.result(), None
        except Exception as exc:  # noqa: BLE001 - e.g. the log file could not be opened: that attempt failed
            return None, f"{type(exc).__name__}: {exc}"

    def close(self) -> None:
        self._pool.shutdown(wait=True)


@dataclass
class GridRun:
    """One run of the grid (or one shared LAE fit when ``lae_settings`` is set)."""

    run_dir: Path
    cell: dict = field(default_factory=dict)
    name: str = ""
    seed: int = 0
    config: dict = field(default_factory=dict)  # the run's settings (a partial TrainConfig dict)
    lae_settings: dict | None = None
    attempts: int = 0
    outcome: str = "waiting"
    error: str | None = None

    @property
    def label(self) -> str:
        return f"LAE {self.run_dir.name}" if self.lae_settings is not None else f"{self.name} seed {self.seed}"

    def argv(self) -> list[str]:
        if self.lae_settings is not None:
            return ["python", "-m", "lapmusic.jobs.grid", "lae", json.dumps(self.lae_settings), str(self.run_dir)]
        return ["python", "-m", "lapmusic.jobs.worker", str(self.run_dir)]

    def log_path(self) -> Path:
        if self.lae_settings is not None:
            return self.run_dir.with_suffix(".log")
        return self.run_dir / "sweep.log"


def prepare_run(config_dict: dict, run_dir: Path) -> bool:
    """Write the run's ``config.json``; False when the folder already holds the finished run with this config.

    Raises
    ------
    LapMusicError
        The settings are invalid, or the folder holds a run with other settings.
    """
    config = TrainConfig.from_settings(config_dict)  # a partial dict: unnamed settings keep the defaults
    config.validate()
    wanted = config.to_dict()
    if (run_dir / "config.json").exists():
        if saved_config(run_dir) != wanted:
            raise LapMusicError(f"{run_dir} holds a run with other settings; remove it or use another --out")
        if (run_dir / "final.json").exists():
            return False
        return True
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", wanted)
    return True


def _finished(run: GridRun) -> bool:
    if run.lae_settings is not None:
        return run.run_dir.is_file()
    return (read_json(run.run_dir / "status.json") or {}).get("state") == "finished" and \
        (run.run_dir / "final.json").is_file()


def _progress_line(done: int, total: int, in_flight: dict, waiting: int, retried: int) -> str:
    """``3/12 done, 2 running, 7 waiting, 0 retried: RUN epoch 2/3; ...``: a run handed to the engine counts as
    running once its worker has written a status (Ray may hold it back until the cluster has its share free)."""
    parts = []
    for run in in_flight.values():
        status = (read_json(run.run_dir / "status.json") or {}) if run.lae_settings is None else {"epochs": None}
        if status.get("state") == "running" or run.lae_settings is not None:
            parts.append(f"{run.label} epoch {status.get('epoch', 0)}/{status['epochs']}"
                         if status.get("epochs") else run.label)
    waiting += len(in_flight) - len(parts)
    return (f"{done}/{total} done, {len(parts)} running, {waiting} waiting, {retried} retried"
            + (": " + "; ".join(parts) if parts else ""))


def run_grid(runs: list[GridRun], engine: Engine, *, retries: int = 2, progress_every: float = 30.0,
             say: Callable[[str], None] = print) -> list[GridRun]:
    """Run every command of ``runs`` through ``engine``, retrying failures, and return the runs with outcomes.

    Parameters
    ----------
    runs : list of GridRun
        What to run; each ends ``"finished"``, ``"failed"`` (after ``retries`` retries) or ``"cancelled"``.
    engine : Engine
        Where the commands run.
    retries : int, default 2
        Further attempts for a run that failed or was killed (each resumes from its checkpoint).
    progress_every : float, default 30
        Seconds between progress lines (each event also prints one line).
    say : callable, default print
        Receives each progress line.

    Returns
    -------
    list of GridRun
        ``runs``, with ``outcome``, ``attempts`` and ``error`` set.
    """
    waiting = deque(runs)
    running: dict = {}
    done = retried = 0
    last_report = time.monotonic()
    while waiting or running:
        while waiting and len(running) < engine.capacity:
            run = waiting.popleft()
            run.attempts += 1
            run.outcome = "running"
            wait_free = run.run_dir if run.attempts > 1 and run.lae_settings is None else None
            running[engine.submit(run.argv(), run.log_path(), wait_free)] = run
        for handle in engine.wait(list(running), timeout=min(1.0, progress_every)):
            run = running.pop(handle)
            code, error = engine.result(handle)
            state = (read_json(run.run_dir / "status.json") or {}) if run.lae_settings is None else {}
            if _finished(run) and code == 0:
                run.outcome = "finished"  # error keeps what ended its previous attempt, for the report
                done += 1
                say(f"finished {run.label}" + (f" (attempt {run.attempts})" if run.attempts > 1 else ""))
                continue
            cancelled = state.get("state") == "cancelled"
            if cancelled and (run.run_dir / CANCEL_FILE).exists():
                run.error = error or "cancelled"
                run.outcome = "cancelled"
                say(f"cancelled {run.label}: its cancel file was set")
                continue
            # Without the file the stop came from outside the grid (a node's cleanup, a shutdown): retried.
            run.error = error or state.get("error") or ("stopped by a signal without its cancel file" if cancelled
                                                        else f"killed by signal {-code}" if code and code < 0
                                                        else f"exit status {code}")
            if run.attempts <= retries:
                run.outcome = "waiting"
                retried += 1
                waiting.appendleft(run)  # resumes from its checkpoint; first in line so it finishes early
                say(f"retrying {run.label} (attempt {run.attempts + 1} of {retries + 1}): {run.error}")
            else:
                run.outcome = "failed"
                say(f"FAILED {run.label} after {run.attempts} attempts: {run.error}")
        if time.monotonic() - last_report >= progress_every and (running or waiting):
            last_report = time.monotonic()
            say(_progress_line(done, len(runs), running, len(waiting), retried))
    return runs


def problems_of(runs: list[GridRun]) -> list[dict]:
    """The runs that did not finish at their first attempt, for the table's JSON."""
    return [{"run": run.label, "run_dir": str(run.run_dir), "attempts": run.attempts, "outcome": run.outcome,
             "error": run.error} for run in runs if run.attempts > 1 or run.outcome != "finished"]


def summarise_finished(runs: list[GridRun]) -> list[dict]:
    """The table rows of the finished runs (cell, cell name and seed added)."""
    return [dict(summarise(run.run_dir), cell=run.cell, cell_name=run.name, seed=run.seed)
            for run in runs if run.lae_settings is None and run.outcome == "finished"]
