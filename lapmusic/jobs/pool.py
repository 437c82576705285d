"""Worker processes of the job manager: start one per running job, notice when they end, stop them.

Each worker is ``python -m lapmusic.jobs.worker RUNDIR`` (:mod:`lapmusic.jobs.worker`) in its own process
session, so it survives a server killed with its process group; a server started after it *adopts* it
(:meth:`WorkerPool.adopt`) and follows it by pid and heartbeat instead of ``Popen.poll``. The pool knows
processes and run folders only; what a job's state becomes is the manager's business.

:class:`Executor` is what the scheduler needs of a pool; :class:`lapmusic.jobs.rayexec.RayPool` is the other
implementation (the runs as Ray tasks, chosen by ``$LAPMUSIC_RAY_ADDRESS``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lapmusic.jobs.worker import CANCEL_FILE, pid_alive, worker_state, write_worker_file

log = logging.getLogger(__name__)


class Executor(Protocol):
    """Where the job manager's workers run; every method is called under the manager's lock."""

    def __len__(self) -> int: ...

    def start(self, run_dir: Path) -> int | None:
        """Start a worker on ``run_dir``; its pid when known now. Raises OSError when it cannot."""

    def adopt(self, run_dir: Path, pid: int | None) -> None:
        """Follow the live worker of an earlier server on ``run_dir``."""

    def ended(self) -> list[Path]:
        """The run folders whose workers ended since the last call."""

    def wait(self, run_dir: Path, timeout: float) -> bool:
        """Wait for this server's worker on ``run_dir``; True when it ended."""

    def stop(self, timeout: float) -> list[Path]:
        """Ask this server's workers to stop (cancel files); the run folders whose workers ended in time."""


@dataclass
class _Worker:
    proc: subprocess.Popen | None  # None for a worker adopted after a restart: not our child
    pid: int | None
    gpu: int | None = None


class WorkerPool:
    """The worker processes of one server (not thread-safe: the job manager calls it under its lock).

    Parameters
    ----------
    threads : int
        Torch threads per worker (``$LAPMUSIC_WORKER_THREADS``): the cores divided by the slots.
    gpus : int
        CUDA GPUs to hand out, one per worker (``CUDA_VISIBLE_DEVICES``); 0 trains on the CPU.
    env : dict, optional
        Extra environment variables for every worker (tests set ``LAPMUSIC_WORKER_TRAIN``).
    """

    def __init__(self, *, threads: int, gpus: int, env: dict | None = None):
        self.threads, self.gpus, self.env = max(1, threads), gpus, dict(env or {})
        self._workers: dict[Path, _Worker] = {}

    def __len__(self) -> int:
        return len(self._workers)

    def start(self, run_dir: Path) -> int:
        """Start a worker on ``run_dir`` (its output goes to ``worker.log``); returns its pid.

        Raises
        ------
        OSError
            When the process cannot be started (the run folder is not writable, no memory...).
        """
        try:
            (run_dir / CANCEL_FILE).unlink()  # a stop pressed for an earlier attempt
        except FileNotFoundError:
            pass
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parent.parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        env["LAPMUSIC_WORKER_THREADS"] = str(self.threads)
        env.setdefault("OMP_NUM_THREADS", str(self.threads))
        gpu = None
        if self.gpus:
            busy = {w.gpu for w in self._workers.values()}
            gpu = next((g for g in range(self.gpus) if g not in busy), 0)
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        env.update(self.env)
        with open(run_dir / "worker.log", "ab") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "lapmusic.jobs.worker", str(run_dir)],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                cwd=str(run_dir), start_new_session=True, close_fds=True,
            )
        self._workers[run_dir] = _Worker(proc, proc.pid, gpu)
        try:
            write_worker_file(run_dir, proc.pid)  # alive from now on, before the worker's first beat
        except OSError:
            log.exception("could not write the worker file of %s; its heartbeat writes it", run_dir)
        return proc.pid

    def adopt(self, run_dir: Path, pid: int | None) -> None:
        """Follow the live worker of an earlier server on ``run_dir`` (by pid and heartbeat)."""
        self._workers[run_dir] = _Worker(None, pid)

    def ended(self) -> list[Path]:
        """The run folders whose workers have ended since the last call (forgotten from now on)."""
        gone = [run_dir for run_dir, worker in self._workers.items() if not self._alive(run_dir, worker)]
        for run_dir in gone:
            del self._workers[run_dir]
        return gone

    def wait(self, run_dir: Path, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for this server's worker on ``run_dir`` to exit; True when it did
        (then it is forgotten). False for an adopted worker, which is not ours to wait for."""
        worker = self._workers.get(run_dir)
        if worker is None or worker.proc is None:
            return False
        try:
            worker.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        del self._workers[run_dir]
        return True

    def stop(self, timeout: float) -> list[Path]:
        """Ask this server's own workers to stop (``RUNDIR/cancel``) and wait up to ``timeout`` seconds in all;
        returns the run folders whose workers exited. The others stop by themselves at their next batch."""
        children = {r: w for r, w in self._workers.items() if w.proc is not None}
        for run_dir in children:
            try:
                (run_dir / CANCEL_FILE).touch()
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        exited = []
        for run_dir, worker in children.items():
            try:
                worker.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                continue
            self._workers.pop(run_dir, None)
            exited.append(run_dir)
        return exited

    @staticmethod
    def _alive(run_dir: Path, worker: _Worker) -> bool:
        if worker.proc is not None:
            return worker.proc.poll() is None
        return worker_state(run_dir) == "alive" and (worker.pid is None or pid_alive(worker.pid))
