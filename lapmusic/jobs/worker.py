"""One training worker process: ``python -m lapmusic.jobs.worker RUNDIR``.

The app's job manager (:mod:`lapmusic.jobs.manager`) starts one of these per running job, so training never
competes with the Streamlit server for the interpreter (and a crash of one cannot take down the other).
The worker

- reads ``RUNDIR/config.json`` and trains it with :func:`lapmusic.training.train.train`, resuming from
  ``checkpoint.pt`` when one exists (a job re-queued after a restart continues where it stopped);
- limits torch to ``$LAPMUSIC_WORKER_THREADS`` threads (the manager gives each of its N slots its share
  of the cores) and lowers its own priority (``nice``), so the server's pages stay responsive;
- writes a heartbeat ``RUNDIR/worker.json`` = ``{"pid", "host", "started", "heartbeat"}`` every
  ``HEARTBEAT_SECONDS``; a reader decides that a worker died when its pid is gone (same host; a live pid
  silent for ``STALL_SECONDS`` is taken for hung) or its heartbeat is older than ``STALE_SECONDS`` (another
  host) (:func:`worker_state`);
- stops at the next batch when the file ``RUNDIR/cancel`` appears or on SIGTERM; the run keeps its last
  checkpoint and ``status.json`` says ``cancelled``.

Exit status: 0 finished or cancelled, 1 failed (the message is in ``status.json``), 2 bad arguments.
``$LAPMUSIC_WORKER_TRAIN=module:function`` replaces the training function (tests use a fake one).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from lapmusic.core.errors import LapMusicError
from lapmusic.core.io import atomic_write_json, read_json
from lapmusic.core.lock import RunFolderBusy, process_exists

HEARTBEAT_SECONDS = 2.0
STALE_SECONDS = 10.0
"""A heartbeat older than this means the worker is gone (five missed beats), for a worker on another host."""
STALL_SECONDS = 120.0
"""On this host, a worker whose pid lives is taken for hung only after this long without a beat: one long
LAPACK call that holds the GIL (scipy's SVD or ``eigh`` in the LAE fit) silences the heartbeat thread."""
WORKER_FILE = "worker.json"
CANCEL_FILE = "cancel"

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ liveness (any process)
def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists on this machine (zombies count as dead)."""
    if not process_exists(pid):
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is dead for our purposes
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def worker_state(run_dir: str | os.PathLike, now: float | None = None) -> str | None:
    """``"alive"``, ``"dead"`` or None (no worker ever ran here: e.g. a ``lapmusic train`` run).

    Alive means: on this host, the pid exists and the heartbeat is fresher than ``STALL_SECONDS`` (a dead
    pid is seen at once; the long limit only catches a hung process); on another host, the heartbeat is
    fresher than ``STALE_SECONDS``.
    A worker that exited cleanly marks ``worker.json`` with ``"exited"``: dead, but its status.json is final.
    """
    return _state_of(read_json(Path(run_dir) / WORKER_FILE), now)


def live_worker(run_dir: str | os.PathLike) -> dict | None:
    """``worker.json`` of the worker training in ``run_dir`` when :func:`worker_state` says alive, else None
    (one read of the file: a restarted server adopts that worker and its ``"pid"``)."""
    info = read_json(Path(run_dir) / WORKER_FILE)
    return info if _state_of(info) == "alive" else None


def _state_of(info: dict | None, now: float | None = None) -> str | None:
    if info is None:
        return None
    if info.get("exited"):
        return "dead"
    beat = info.get("heartbeat")
    if not isinstance(beat, (int, float)):
        return "dead"
    age = (now or time.time()) - beat
    if info.get("host") == socket.gethostname():
        return "alive" if pid_alive(info.get("pid")) and age <= STALL_SECONDS else "dead"
    return "alive" if age <= STALE_SECONDS else "dead"


def write_worker_file(run_dir: Path, pid: int, started: float | None = None, **extra) -> None:
    now = time.time()
    atomic_write_json(run_dir / WORKER_FILE, {"pid": pid, "host": socket.gethostname(),
                                              "started": started or now, "heartbeat": now, **extra})


# ------------------------------------------------------------------------------ inside the worker
class FlagCancel:
    """``is_set()`` when ``RUNDIR/cancel`` exists or SIGTERM arrived (the file is checked at most 5x/s)."""

    def __init__(self, path: Path):
        self.path = path
        self.event = threading.Event()
        self._checked = 0.0

    def set(self) -> None:
        self.event.set()

    def is_set(self) -> bool:
        if self.event.is_set():
            return True
        now = time.monotonic()
        if now - self._checked >= 0.2:
            self._checked = now
            if self.path.exists():
                self.event.set()
        return self.event.is_set()


class Heartbeat(threading.Thread):
    """Rewrites ``worker.json`` every ``HEARTBEAT_SECONDS`` until stopped (a daemon thread)."""

    def __init__(self, run_dir: Path, interval: float = HEARTBEAT_SECONDS):
        super().__init__(name="lapmusic-heartbeat", daemon=True)
        self.run_dir, self.interval = run_dir, interval
        self.started_at = time.time()
        self._stop_event = threading.Event()
        self.beat()

    def beat(self, **extra) -> None:
        try:
            write_worker_file(self.run_dir, os.getpid(), self.started_at, **extra)
        except OSError as exc:  # a full disk must not kill the training; the reader will see it stale
            log.warning("heartbeat: %s", exc)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.beat()

    def stop(self, outcome: str) -> None:
        self._stop_event.set()
        self.join(timeout=5)
        self.beat(exited=time.time(), outcome=outcome)


def _limit_resources(threads: int, nice: int) -> None:
    if nice > 0:
        try:
            os.nice(nice)
        except OSError:
            pass
    import torch

    torch.set_num_threads(max(1, threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set (only possible before the first parallel work)


def _train_function():
    spec = os.environ.get("LAPMUSIC_WORKER_TRAIN", "").strip()
    if not spec:
        from lapmusic.training.config import TrainConfig
        from lapmusic.training.train import train

        return train, TrainConfig.from_dict
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name), dict


def run(run_dir: Path) -> int:
    """Train the run in ``run_dir`` in this process (the body of ``python -m lapmusic.jobs.worker``).

    Parameters
    ----------
    run_dir : Path
        A run folder holding ``config.json``; its ``checkpoint.pt``, when there is one, is resumed.

    Returns
    -------
    int
        The exit status: 0 when the run finished or was cancelled, 1 when it failed (the message is in
        ``status.json``, unless another process holds the folder: then only on stderr).
    """
    threads = int(os.environ.get("LAPMUSIC_WORKER_THREADS", "0") or 0) or (os.cpu_count() or 1)
    nice = int(os.environ.get("LAPMUSIC_WORKER_NICE", "5") or 0)
    heartbeat = Heartbeat(run_dir)
    heartbeat.start()
    cancel = FlagCancel(run_dir / CANCEL_FILE)
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    signal.signal(signal.SIGINT, lambda *_: cancel.set())
    outcome = "failed"
    try:
        train, make_config = _train_function()
        if train.__module__ == "lapmusic.training.train":
            _limit_resources(threads, nice)
        config = make_config(read_json(run_dir / "config.json") or {})
        resume = (run_dir / "checkpoint.pt").is_file()
        result = train(config, run_dir, cancel=cancel, resume=resume)
        outcome = str((result or {}).get("state") or "finished") if isinstance(result, dict) else "finished"
        return 0
    except RunFolderBusy as exc:
        # Another process owns the folder and its status.json: writing "failed" there would hide its run.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except LapMusicError as exc:
        _fail_unless_recorded(run_dir, str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BaseException as exc:  # noqa: BLE001 - recorded for the app, traceback in worker.log
        log.exception("worker for %s failed", run_dir)
        _fail_unless_recorded(run_dir, f"unexpected error ({type(exc).__name__}: {exc})")
        return 1
    finally:
        heartbeat.stop(outcome)


def _fail_unless_recorded(run_dir: Path, message: str) -> None:
    status = read_json(run_dir / "status.json") or {}
    if status.get("state") != "failed":
        status.update(state="failed", error=message, message="failed", updated=time.time())
        atomic_write_json(run_dir / "status.json", status)


def main(argv: list[str] | None = None) -> int:
    """``python -m lapmusic.jobs.worker RUNDIR``: check the arguments, then :func:`run`.

    Parameters
    ----------
    argv : list of str, optional
        The command-line arguments (``sys.argv[1:]`` by default).

    Returns
    -------
    int
        :func:`run`'s exit status, or 2 when ``RUNDIR`` holds no ``config.json``.
    """
    parser = argparse.ArgumentParser(prog="python -m lapmusic.jobs.worker", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a run folder holding config.json")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir).resolve()
    if not (run_dir / "config.json").is_file():
        print(f"error: {run_dir} is not a run folder (no config.json)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # A stale cancel file of an earlier attempt is removed by the manager before it starts us, never here:
    # a stop pressed while this process starts up must not be lost.
    return run(run_dir)


if __name__ == "__main__":
    sys.exit(main())
