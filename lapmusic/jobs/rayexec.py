"""Ray as the engine: a grid's runs (:class:`RayEngine`) and the app's jobs (:class:`RayPool`) as Ray tasks.

Each run is one Ray task that starts ``python -m lapmusic.jobs.worker RUNDIR`` and waits for it, declaring its
share of the cluster: ``num_cpus`` (the worker's torch threads) and ``num_gpus`` (a fraction: a dozen small runs
share one GPU; Ray sets ``CUDA_VISIBLE_DEVICES`` for the task and the worker inherits it). The worker dies
with its task's process (``PR_SET_PDEATHSIG``), so a killed Ray worker leaves no training behind, and Ray itself
never retries a task: the caller does, from the run's checkpoint (:func:`lapmusic.jobs.gridrun.run_grid`; in
the app, the scheduler's attempts). Run folders must be on a file system every node sees
(``LAPMUSIC_RUNS_DIR``); their lock is a lease that works across hosts (:mod:`lapmusic.core.lock`).

Ray is optional (``pip install 'lapmusic[ray]'``) and imported only here, only when asked for.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from lapmusic.core.errors import LapMusicError
from lapmusic.jobs.command import run_command
from lapmusic.jobs.pool import WorkerPool
from lapmusic.jobs.worker import CANCEL_FILE, worker_state

log = logging.getLogger(__name__)

ADDRESS_ENV = "LAPMUSIC_RAY_ADDRESS"
OBJECT_STORE_BYTES = 100 * 2**20  # the tasks pass file names, never arrays: Ray's minimum-sized store will do


def import_ray():
    """The ``ray`` module; :class:`LapMusicError` saying how to install it when it is missing."""
    try:
        import ray
    except ImportError:
        raise LapMusicError("Ray is not installed: pip install 'lapmusic[ray]' (or use --engine local, or "
                            f"unset {ADDRESS_ENV})") from None
    return ray


def connect(address: str | None, cpus: int | None = None, gpus: float | None = None) -> bool:
    """Connect this process to Ray at ``address``, or start a local Ray when ``address`` is empty or ``local``.

    Parameters
    ----------
    address : str or None
        A cluster's address (``auto``, ``HOST:6379``, ``ray://HOST:10001``); None or ``local``: start one here,
        head on 127.0.0.1, no dashboard.
    cpus, gpus : optional
        What a local Ray offers (default: every core; the GPUs it finds).

    Returns
    -------
    bool
        True when this call started a local Ray (the caller shuts it down), False when it joined one.

    Raises
    ------
    LapMusicError
        Ray is missing or the address cannot be reached.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    if threading.current_thread() is threading.main_thread():
        return _init(ray, address, cpus, gpus)
    # Ray ties the processes it starts to the starting *thread* (PR_SET_PDEATHSIG): a Streamlit script thread
    # ends after each rerun, so start them from a thread that lives as long as this process.
    outcome: dict = {}
    ready = threading.Event()

    def keeper() -> None:
        try:
            outcome["started"] = _init(ray, address, cpus, gpus)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc
        ready.set()
        threading.Event().wait()

    threading.Thread(target=keeper, name="lapmusic-ray", daemon=True).start()
    ready.wait()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["started"]


def _init(ray, address: str | None, cpus: int | None, gpus: float | None) -> bool:
    quiet = {"log_to_driver": False, "configure_logging": False}
    try:
        if address and address != "local":
            ray.init(address=address, **quiet)
            return False
        ray.init(num_cpus=cpus or os.cpu_count() or 1, num_gpus=gpus, include_dashboard=False,
                 _node_ip_address="127.0.0.1", object_store_memory=OBJECT_STORE_BYTES, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise LapMusicError(f"cannot reach Ray at {address or 'a new local instance'}: {str(exc).splitlines()[0]}; "
                            "check the address (ray status on the head node)") from None
    return True


def forwarded_env() -> dict:
    """This process's ``LAPMUSIC_*`` settings for the workers (data and cache folders, a replaced training
    function), except those that belong to a host: a Ray worker's environment is its node's, not ours."""
    return {k: v for k, v in os.environ.items()
            if k.startswith("LAPMUSIC_") and k not in ("LAPMUSIC_HOST", ADDRESS_ENV, "LAPMUSIC_WORKER_THREADS")}


def task_options(cpus: float, gpus: float) -> dict:
    """The Ray options of one run's task: its CPU and GPU share, and no retries by Ray (the caller resumes it).

    Raises
    ------
    LapMusicError
        A share is negative, or above one GPU (one run uses one GPU at most).
    """
    if cpus <= 0 or gpus < 0 or gpus > 1:
        raise LapMusicError(f"a run needs cpus > 0 and 0 <= gpus <= 1 (got cpus={cpus}, gpus={gpus}); a fraction "
                            "such as --gpus-per-run 0.08 lets twelve small runs share one GPU")
    return {"num_cpus": cpus, "num_gpus": gpus, "max_retries": 0}


class RayEngine:
    """A grid's commands as Ray tasks (:class:`lapmusic.jobs.gridrun.Engine`), ``threads`` CPUs and
    ``gpus_per_run`` GPU each; at most ``jobs`` in flight (default: all, Ray queues them by resources)."""

    name = "ray"

    def __init__(self, *, address: str | None, threads: int, gpus_per_run: float, jobs: int | None = None,
                 cpus: int | None = None):
        self.ray = import_ray()
        options = task_options(max(1, threads), gpus_per_run)
        self.started = connect(address, cpus=cpus)
        self.capacity = jobs or 1_000_000
        self.env = {**forwarded_env(), "LAPMUSIC_WORKER_THREADS": str(max(1, threads)),
                    "OMP_NUM_THREADS": str(max(1, threads))}
        self._remote = self.ray.remote(run_command).options(**options)

    def submit(self, argv, log_path, wait_free=None):
        return self._remote.remote(argv, str(log_path), self.env, str(wait_free) if wait_free else None)

    def wait(self, handles, timeout):
        ready, _ = self.ray.wait(handles, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = self.ray.wait(handles, num_returns=len(handles), timeout=0)
        return ready

    def result(self, handle):
        try:
            return self.ray.get(handle), None
        except self.ray.exceptions.RayError as exc:  # the Ray worker or its node died: that attempt failed
            return None, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


class RayPool:
    """The app's workers as Ray tasks: the interface of :class:`lapmusic.jobs.pool.WorkerPool`.

    A task is owned by this server: when the server stops, Ray ends its tasks and their workers, and the
    restarted server resumes those runs from their checkpoints (the scheduler's recovery). Not thread-safe:
    the job manager calls it under its lock.

    Parameters
    ----------
    address : str
        ``$LAPMUSIC_RAY_ADDRESS`` (``local`` starts a Ray on this machine).
    threads : int
        CPUs per run (the worker's torch threads).
    gpus_per_run : float
        GPU share per run (``$LAPMUSIC_RAY_GPUS_PER_RUN``, default 0).
    env : dict, optional
        Extra environment variables for every worker (tests set ``LAPMUSIC_WORKER_TRAIN``).
    """

    def __init__(self, *, address: str, threads: int, gpus_per_run: float = 0.0, env: dict | None = None):
        self.ray = import_ray()
        options = task_options(max(1, threads), gpus_per_run)
        connect(address)
        self.threads = max(1, threads)
        self.env = {**forwarded_env(), "LAPMUSIC_WORKER_THREADS": str(self.threads), **dict(env or {})}
        self._remote = self.ray.remote(run_command).options(**options)
        self._tasks: dict[Path, object] = {}  # None: a worker adopted after a restart, followed by heartbeat

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, run_dir: Path) -> None:
        """Hand the run to Ray (it starts when the cluster has its share free); returns None, the worker's pid
        is known from its heartbeat (``worker.json``).

        Raises
        ------
        OSError
            Ray refused the task (e.g. the cluster is gone).
        """
        try:
            (run_dir / CANCEL_FILE).unlink()  # a stop pressed for an earlier attempt
        except FileNotFoundError:
            pass
        argv = ["python", "-m", "lapmusic.jobs.worker", str(run_dir)]
        try:
            self._tasks[run_dir] = self._remote.remote(argv, str(run_dir / "worker.log"), self.env)
        except self.ray.exceptions.RayError as exc:
            raise OSError(f"Ray refused the task: {exc}") from None
        return None

    def adopt(self, run_dir: Path, pid: int | None) -> None:
        """Follow the live worker of an earlier server on ``run_dir`` by its heartbeat."""
        self._tasks[run_dir] = None

    def _alive(self, run_dir: Path, ref) -> bool:
        if ref is None:
            return worker_state(run_dir) == "alive"
        ready, _ = self.ray.wait([ref], num_returns=1, timeout=0)
        return not ready

    def ended(self) -> list[Path]:
        """The run folders whose tasks have ended since the last call (forgotten from now on)."""
        gone = [run_dir for run_dir, ref in self._tasks.items() if not self._alive(run_dir, ref)]
        for run_dir in gone:
            del self._tasks[run_dir]
        return gone

    def wait(self, run_dir: Path, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for this server's task on ``run_dir``; True when it ended."""
        ref = self._tasks.get(run_dir)
        if ref is None:
            return False
        ready, _ = self.ray.wait([ref], num_returns=1, timeout=timeout)
        if not ready:
            return False
        del self._tasks[run_dir]
        return True

    def stop(self, timeout: float) -> list[Path]:
        """Ask this server's tasks to stop (``RUNDIR/cancel``), wait up to ``timeout`` seconds in all; returns the
        run folders whose tasks ended."""
        own = {r: ref for r, ref in self._tasks.items() if ref is not None}
        for run_dir in own:
            try:
                (run_dir / CANCEL_FILE).touch()
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        exited = []
        for run_dir, ref in own.items():
            ready, _ = self.ray.wait([ref], num_returns=1, timeout=max(0.1, deadline - time.monotonic()))
            if ready:
                self._tasks.pop(run_dir, None)
                exited.append(run_dir)
        return exited


def choose_executor(*, threads: int, gpus: int, env: dict | None = None):
    """The job manager's workers: :class:`RayPool` when ``$LAPMUSIC_RAY_ADDRESS`` is set, else the local
    :class:`~lapmusic.jobs.pool.WorkerPool` (nothing changes).

    Raises
    ------
    LapMusicError
        ``$LAPMUSIC_RAY_ADDRESS`` is set but Ray is missing or unreachable, or ``$LAPMUSIC_RAY_GPUS_PER_RUN``
        is no number in [0, 1].
    """
    address = os.environ.get(ADDRESS_ENV, "").strip()
    if not address:
        return WorkerPool(threads=threads, gpus=gpus, env=env)
    try:
        share = float(os.environ.get("LAPMUSIC_RAY_GPUS_PER_RUN", "0") or 0)
    except ValueError:
        raise LapMusicError("LAPMUSIC_RAY_GPUS_PER_RUN must be a number such as 0.08 (a GPU's share per run)") from None
    return RayPool(address=address, threads=threads, gpus_per_run=share, env=env)
