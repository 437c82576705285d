"""Run folders as the app sees them: names, keys, and defensive summaries of what is on disk.

No Streamlit, no processes: everything here only reads (or names) run folders, so any number of page
sessions may call it while workers write. Layout of a run folder: ``docs/reference.md`` ("Run folders").

A **run key** identifies what a run computes: ``sha256`` of its full configuration, the version of its
dataset (a hash of the dataset's file) and the version of the code (``lapmusic.__version__`` plus a hash of
the training modules' source). Two Train presses with the same key would produce bit-identical results, so
the job manager lets the second one attach to the first run instead of training again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from lapmusic.core.io import read_json
from lapmusic.core.lock import lock_owner
from lapmusic.jobs.worker import worker_state
from lapmusic.training.rundir import inspect_history, read_config_dict

log = logging.getLogger(__name__)

QUEUED, RUNNING, FINISHED, CANCELLED, FAILED = "queued", "running", "finished", "cancelled", "failed"
INTERRUPTED = "interrupted"
"""A run whose status.json says running but whose process is gone (server or worker killed). Derived by
:func:`summarize_run`, never written to disk."""
DAMAGED = "damaged"
"""A run folder whose config.json or status.json cannot be used; :func:`summarize_run` puts the reason in
``status["error"]``. Reported by :func:`list_runs`, never written to disk."""
ACTIVE_STATES = (QUEUED, RUNNING)
DONE_STATES = (FINISHED, CANCELLED, FAILED)
LEGACY_STALE_SECONDS = 300.0
"""For runs without a worker heartbeat and without a run lock (older ``lapmusic`` versions): a running
status.json older than this means the run was interrupted."""
JOB_FILE = "job.json"
"""Written by the job manager: ``{"key", "submitted", "creator", "client", "student", "sessions", "attempts"}``."""

CODE_PACKAGES = ("core", "data", "lae", "model", "training")
"""The subpackages whose code decides a run's numbers (with the worker): hashed into the run key."""
INIT_NAMES = {"lae": "LAE", "random": "random"}


# ------------------------------------------------------------------------------ names
def clean_student(name: str | None) -> str:
    """A student's name as shown and put in folder names: letters, digits, space, ``-``, ``_``; 24 chars."""
    text = re.sub(r"[^\w \-]+", "", str(name or ""), flags=re.ASCII).strip()
    return re.sub(r"\s+", " ", text)[:24]


def run_folder_name(config: dict, *, now: datetime | None = None, student: str | None = None) -> str:
    """``bach-lae-h128-20261127-140512-anna-1a2b``: dataset, init, hidden, time, student, 4 random hex."""
    now = now or datetime.now()
    parts = [
        str(config.get("dataset", "run")),
        str(config.get("init", "")),
        f"h{config['hidden']}" if "hidden" in config else "",
        now.strftime("%Y%m%d-%H%M%S"),
        clean_student(student).replace(" ", "-"),
        uuid.uuid4().hex[:4],
    ]
    name = "-".join(p for p in parts if p)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)  # user:NAME -> user_NAME


def run_title(config: dict, when: float | None = None, student: str | None = None) -> str:
    """``bach · LAE · h128 · 14:05 · anna``: dataset · init · hidden · time (· student)."""
    init = INIT_NAMES.get(str(config.get("init")), str(config.get("init", "?")))
    bits = [str(config.get("dataset", "?")), init, f"h{config.get('hidden', '?')}"]
    if when:
        bits.append(datetime.fromtimestamp(when).strftime("%H:%M"))
    if clean_student(student):
        bits.append(clean_student(student))
    return " · ".join(bits)


# ------------------------------------------------------------------------------ keys
_code_version: str | None = None
_dataset_versions: dict[tuple, str] = {}


def code_version() -> str:
    """``0.1.0+3f2a9c1d0b7e``: the package version and a hash of the modules that decide a run's numbers."""
    global _code_version
    if _code_version is None:
        from lapmusic import __version__

        digest = hashlib.sha256()
        package = Path(__file__).resolve().parent.parent
        files = [path for name in CODE_PACKAGES for path in sorted((package / name).rglob("*.py"))]
        for path in files + [package / "jobs" / "worker.py"]:
            digest.update(path.relative_to(package).as_posix().encode())
            digest.update(path.read_bytes())
        _code_version = f"{__version__}+{digest.hexdigest()[:12]}"
    return _code_version


def dataset_file(key: str) -> Path | None:
    """The file a dataset is read from (None when it is not there yet: still to build or download)."""
    from lapmusic.data.benchmark import find_local_file
    from lapmusic.data.catalog import BACH_CACHE_NAME, DATASETS
    from lapmusic.data.dataset import cache_dir
    from lapmusic.data.user import user_dataset_path

    if key.startswith("user:"):
        path = user_dataset_path(key)
    elif key == "bach":
        path = cache_dir() / BACH_CACHE_NAME
    elif key in DATASETS:
        path = find_local_file(DATASETS[key])
    else:
        return None
    return path if path is not None and path.is_file() else None


def dataset_version(key: str) -> str:
    """``sha256`` (16 hex) of the dataset's file, cached per (path, size, mtime); ``KEY:absent`` before it
    exists (the Bach set before its first build: every run queued then shares that version)."""
    path = dataset_file(key)
    if path is None:
        return f"{key}:absent"
    stat = path.stat()
    cache_key = (str(path), stat.st_size, stat.st_mtime_ns)
    if cache_key not in _dataset_versions:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _dataset_versions[cache_key] = digest.hexdigest()[:16]
    return _dataset_versions[cache_key]


def run_key(config: dict, *, dataset: str | None = None, code: str | None = None, cuda: bool | None = None) -> str:
    """The sharing key of a run with this configuration (hex, 24 chars). ``device: auto`` trains on CUDA
    when there is one, so the key includes whether there is."""
    config = dict(config)
    if config.get("device", "auto") == "auto":
        if cuda is None:
            import torch

            cuda = bool(torch.cuda.is_available())
        config["device"] = "auto:cuda" if cuda else "auto:cpu"
    payload = {
        "config": config,
        "dataset": dataset if dataset is not None else dataset_version(str(config.get("dataset"))),
        "code": code if code is not None else code_version(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


# ------------------------------------------------------------------------------ reading run folders
@dataclass
class RunSummary:
    """What the pages list about one run folder (read defensively: a bad file gives defaults, not errors)."""

    run_dir: Path
    config: dict
    status: dict
    state: str
    final: dict | None
    epochs_done: int  # the last epoch in metrics.jsonl (epoch 0 is the untrained network)
    modified: float
    job: dict  # job.json (empty for runs of the lapmusic command)
    owner: object | None = None  # the live Job of this server's manager training or queueing it

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def title(self) -> str:
        """``bach · LAE · h128 · 14:05 · anna``."""
        return run_title(self.config, self.job.get("submitted") or self.modified, self.job.get("student"))

    @property
    def has_model(self) -> bool:
        """A model to sample from exists (best so far or last checkpoint)."""
        return (self.run_dir / "best.pt").is_file() or (self.run_dir / "checkpoint.pt").is_file()

    @property
    def has_checkpoint(self) -> bool:
        return (self.run_dir / "checkpoint.pt").is_file()

    @property
    def elsewhere(self) -> bool:
        """Queued or running, but not by this server (the ``lapmusic`` command, or another server)."""
        return self.state in ACTIVE_STATES and self.owner is None

    @property
    def resumable(self) -> bool:
        return self.state in (CANCELLED, FAILED, INTERRUPTED) and self.has_checkpoint

    @property
    def started(self) -> str:
        return datetime.fromtimestamp(self.modified, tz=timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M")


def live_state(run_dir: Path, status: dict, now: float | None = None) -> str:
    """The state of a run whose status.json says ``running``: ``running`` while its process lives,
    else ``interrupted``. The worker heartbeat decides for app runs; the run lock (or, lacking both, the
    age of status.json) for runs of the ``lapmusic`` command."""
    heartbeat = worker_state(run_dir, now)
    if heartbeat is not None:
        return RUNNING if heartbeat == "alive" else INTERRUPTED
    if lock_owner(run_dir) is not None:  # a process holding the folder's writer lock is alive
        return RUNNING
    updated = status.get("updated")
    recent = isinstance(updated, (int, float)) and (now or time.time()) - updated < LEGACY_STALE_SECONDS
    return RUNNING if recent else INTERRUPTED


def summarize_run(run_dir: str | os.PathLike, manager=None) -> RunSummary | None:
    """Read one run folder as the pages show it. Never raises on a bad folder.

    Parameters
    ----------
    run_dir : path
        The run folder.
    manager : JobManager, optional
        The server's job manager: an active run it queues or trains gets it as ``owner`` (else the run is
        active ``elsewhere``: another server or the ``lapmusic`` command).

    Returns
    -------
    RunSummary or None
        None when ``run_dir`` is not a run folder (no ``config.json``). A ``config.json`` or ``status.json``
        that cannot be used gives state ``damaged`` with the reason in ``status["error"]``; malformed lines
        of ``metrics.jsonl`` are skipped; a ``running`` status whose process is gone reads ``interrupted``.
    """
    run_dir = Path(run_dir)
    config, problem = read_config_dict(run_dir)
    if config is None:
        return None
    status = read_json(run_dir / "status.json") or {}
    if problem is None and not isinstance(status.get("state"), (str, type(None))):
        problem = f"status.json: state is {status.get('state')!r}, not a string"
    final = read_json(run_dir / "final.json")
    state = str(status.get("state") or (FINISHED if final is not None else INTERRUPTED))
    if state == RUNNING:
        state = live_state(run_dir, status)
    elif state not in ACTIVE_STATES + DONE_STATES:
        state = INTERRUPTED
    metrics, _ = inspect_history(run_dir)  # malformed lines skipped
    if problem is not None:
        state, status = DAMAGED, {**status, "state": DAMAGED, "error": problem}
    try:
        modified = (run_dir / "config.json").stat().st_mtime
    except OSError:
        modified = 0.0
    owner = manager.job_for_run(run_dir) if manager is not None and state in ACTIVE_STATES else None
    return RunSummary(
        run_dir=run_dir,
        config=config,
        status=status,
        state=state,
        final=final,
        epochs_done=max((row["epoch"] for row in metrics), default=0),
        modified=modified,
        job=read_json(run_dir / JOB_FILE) or {},
        owner=owner,
    )


def list_runs(runs_dir: str | os.PathLike | None = None, manager=None) -> list[RunSummary]:
    """Every run folder directly under ``runs_dir``, or one level deeper (as ``lapmusic compare`` writes them).

    Parameters
    ----------
    runs_dir : path, optional
        The folder to list; by default the manager's runs folder, else :func:`default_runs_dir`.
    manager : JobManager, optional
        Passed to :func:`summarize_run`.

    Returns
    -------
    list of RunSummary
        Newest first (by the time of ``config.json``); empty when ``runs_dir`` does not exist. A folder that
        cannot be read at all is listed as ``damaged``: it never hides the others.
    """
    root = Path(runs_dir) if runs_dir is not None else (manager.runs_dir if manager else default_runs_dir())
    if not root.is_dir():
        return []
    found: list[RunSummary] = []
    for child in candidate_dirs(root):
        try:
            summary = summarize_run(child, manager)
        except Exception as exc:  # noqa: BLE001 - one bad folder must not break every user's page
            log.warning("run folder %s is unreadable: %s", child, exc)
            summary = RunSummary(run_dir=child, config={}, status={"state": DAMAGED, "error": f"unreadable: {exc}"},
                                 state=DAMAGED, final=None, epochs_done=0, modified=0.0, job={})
        if summary is not None:
            found.append(summary)
    return sorted(found, key=lambda r: (r.modified, r.name), reverse=True)


def newest_lae_first(runs: list[RunSummary]) -> list[RunSummary]:
    """``runs`` (newest first) with the newest LAE run moved to the front: what a new session opens on."""
    lae = [r for r in runs if r.config.get("init") == "lae"]
    return ([lae[0]] + [r for r in runs if r is not lae[0]]) if lae else list(runs)


def default_runs_dir() -> Path:
    """``$LAPMUSIC_RUNS_DIR`` or ``./runs``: the same folder the CLI writes run folders into."""
    return Path(os.environ.get("LAPMUSIC_RUNS_DIR") or "runs")


def _is_run_dir(path: Path) -> bool:
    try:
        return path.is_dir() and not path.name.startswith(".") and (path / "config.json").is_file()
    except OSError:
        return False


def candidate_dirs(root: Path) -> Iterable[Path]:
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
