"""Shared helpers of the app pages: the job manager, the browser session, dataset cache, error guard.

Every page body runs inside :func:`guarded`, so that a user never sees a traceback: errors a user can
cause (``LapMusicError``) are shown as their message, anything else as a short apology plus the
exception's one-line summary, with the traceback in the server log.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Callable

import streamlit as st

from ..errors import LapMusicError
from ..jobs import DatasetCache, JobManager, dataset_token, default_max_jobs, default_runs_dir

log = logging.getLogger("lapmusic.app")

PAGE_KEY = "page"  # the tabs' widget key and URL query parameter (?page=Training)


def poll_seconds() -> float:
    """How often live views refresh (``LAPMUSIC_POLL_SECONDS``, default 1.5 s)."""
    try:
        return max(0.2, float(os.environ.get("LAPMUSIC_POLL_SECONDS", "1.5")))
    except ValueError:
        return 1.5


# ------------------------------------------------------------------------------ errors
def guarded(render: Callable[..., Any], *args, **kwargs) -> Any:
    """Run a page body; turn any error into a readable message instead of a traceback."""
    try:
        return render(*args, **kwargs)
    except LapMusicError as exc:
        st.error(str(exc))
    except Exception as exc:  # noqa: BLE001 - the app must stay usable whatever a page does
        log.exception("page %s failed", getattr(render, "__qualname__", render))
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        st.error(
            f"Something went wrong here ({type(exc).__name__}{': ' + message if message else ''}). "
            "The rest of the app still works; the details are in the server log."
        )
    return None


# ------------------------------------------------------------------------------ jobs and sessions
@st.cache_resource(show_spinner=False)
def _datasets_for(data_dir: str, cache_dir: str) -> DatasetCache:
    return DatasetCache()


def datasets() -> DatasetCache:
    """The process-wide dataset cache, shared by the pages and the training jobs (one per data folders)."""
    from ..data import cache_dir

    return _datasets_for(os.environ.get("LAPMUSIC_DATA_DIR", ""), str(cache_dir()))


@st.cache_resource(show_spinner=False)
def _manager_for(runs_dir: str, max_jobs: int) -> JobManager:
    return JobManager(runs_dir, max_jobs=max_jobs, datasets=datasets())


def manager() -> JobManager:
    """The process-wide job manager (one per server; keyed by runs folder so tests can isolate)."""
    return _manager_for(str(default_runs_dir().resolve()), default_max_jobs())


def session_id() -> str:
    """This browser session's id. Kept in the URL (``?session=``) so a page refresh keeps its jobs."""
    if "session_id" not in st.session_state:
        from_url = st.query_params.get("session")
        st.session_state.session_id = from_url if from_url and len(from_url) <= 64 else uuid.uuid4().hex[:10]
    if st.query_params.get("session") != st.session_state.session_id:
        st.query_params["session"] = st.session_state.session_id
    return st.session_state.session_id


def go_to(page: str) -> None:
    """Switch the tab shown; call from a widget callback (before the tabs are drawn)."""
    st.session_state[PAGE_KEY] = page


def focused_runs() -> list[Path]:
    """Run folders the Training / Pre-training pages show: the last started group or the runs reopened.

    After a page refresh (a new Streamlit session with the same ``?session=`` id) it is this browser
    session's latest group of jobs again.
    """
    if "focus" not in st.session_state:
        jobs = manager().jobs(session_id())
        if jobs:
            latest = jobs[-1]
            group = [j for j in jobs if latest.group is not None and j.group == latest.group] or [latest]
            set_focus([j.run_dir for j in group])
    return [Path(p) for p in st.session_state.get("focus", []) if Path(p).is_dir()]


def set_focus(run_dirs) -> None:
    st.session_state["focus"] = [str(Path(p)) for p in run_dirs]


# ------------------------------------------------------------------------------ datasets
def dataset_cache_token(key: str) -> str:
    """Changes when a user dataset is rebuilt under the same name (for caches keyed by dataset)."""
    return dataset_token(key)


def get_dataset(key: str):
    """A dataset, loaded once per server process; shows a progress bar while it loads or builds.

    The load runs in its own thread (``DatasetCache``): a rerun that interrupts this page (a click
    elsewhere) does not abort it, and a training job asking for the same dataset waits for the same load.
    """
    entry = datasets().start(key)
    if not entry.done.is_set():
        bar = st.progress(0.0, text=f"Loading {key}...")
        while not entry.done.wait(0.3):
            bar.progress(max(0.0, min(1.0, entry.fraction)), text=f"Loading {key}: {entry.message}")
        bar.empty()
    return entry.wait()


# ------------------------------------------------------------------------------ formatting
def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def app_defaults() -> dict:
    """Sidebar defaults, overridable by ``LAPMUSIC_APP_DEFAULTS`` (JSON), e.g. to shrink runs in tests.

    The demo's settings were chosen by measurement on the Bach set (docs/app.md, "The default demo"): with
    batches of 8 at lr 3e-3 both inits beat both trivial baselines within the 30 epochs (the random start
    needs the larger learning rate and the more steps to leave the per-key-frequency plateau), and the LAE
    run stays ahead at every epoch; it stops early (patience 5) once it overfits.
    """
    defaults = {
        "dataset": "bach",
        "hidden": 128,
        "init": "both",
        "epochs": 30,
        "lr": 3e-3,
        "batch_size": 8,
        "max_sequences": 0,
        "patience": 5,
        "seed": 0,
        "device": "auto",
    }
    text = os.environ.get("LAPMUSIC_APP_DEFAULTS", "").strip()
    if text:
        try:
            override = json.loads(text)
            if isinstance(override, dict):
                defaults.update({k: v for k, v in override.items() if k in defaults})
        except ValueError:
            log.warning("ignoring LAPMUSIC_APP_DEFAULTS (not JSON): %r", text)
    return defaults


def display_path(path) -> str:
    """``path`` relative to the working folder when it is inside it (``runs/...``), else absolute."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def run_label(config: dict, *, with_dataset: bool = False) -> str:
    """``LAE · h128 · seed 0`` (with the dataset first when runs of several datasets are compared)."""
    init = {"lae": "LAE", "random": "random"}.get(str(config.get("init")), str(config.get("init", "?")))
    label = f"{init} · h{config.get('hidden', '?')} · seed {config.get('seed', '?')}"
    return f"{config.get('dataset', '?')} · {label}" if with_dataset else label
