"""The Streamlit server process: its options and the objects every page session shares.

Importing this module sets the process up (once; ``app.py`` imports it before any page draws): pandas
imported whole, Streamlit's websocket client patched to hang up on browsers far behind
(:mod:`lapmusic.ui.slowclients`), its upload endpoint bounded (:mod:`lapmusic.ui.uploads`), and no full garbage collection after every script run. The shared objects
are the job manager (:func:`manager`), the server secret that signs session links (:func:`server_secret`)
and the dataset cache (:func:`dataset_cache`).
"""

from __future__ import annotations

import os
from pathlib import Path

# Plotly looks pandas up in sys.modules without importing it: a half-imported pandas breaks charts.
import pandas  # noqa: F401
import streamlit as st
from streamlit import config as st_config
from streamlit.runtime.scriptrunner import get_script_run_ctx

from lapmusic.data.cache import DatasetCache
from lapmusic.data.dataset import cache_dir
from lapmusic.jobs import sessions
from lapmusic.jobs.limits import default_max_jobs
from lapmusic.jobs.manager import JobManager
from lapmusic.jobs.runs import default_runs_dir

from . import slowclients, uploads

slowclients.install()
uploads.install()  # the upload endpoint bounded per session, client and server before a body is read
# A full gc after every script run (fragment refreshes included) holds the GIL long enough to starve a class
# of live pages; Python's generational collector still runs. .streamlit/config.toml says the same.
st_config.set_option("runner.postScriptGC", False, "lapmusic.ui.server")
_ctx = get_script_run_ctx()
APP_FOLDER = Path(_ctx.main_script_path).resolve().parent if _ctx is not None and _ctx.main_script_path else Path.cwd()
"""The folder of ``app.py``, fixed when the server process starts: a relative runs folder is taken from here."""


def runs_dir() -> Path:
    """The runs folder as an absolute path: ``$LAPMUSIC_RUNS_DIR`` (or ``runs``), a relative one taken from
    :data:`APP_FOLDER` whatever folder the server was started from, so the same server keeps the same runs
    (and the secret that signs session links) however it is started."""
    path = default_runs_dir()
    return (path if path.is_absolute() else APP_FOLDER / path).resolve()


@st.cache_resource(show_spinner=False)
def _manager_for(runs_dir: str, max_jobs: int) -> JobManager:
    return JobManager(runs_dir, max_jobs=max_jobs)


def manager() -> JobManager:
    """The process-wide job manager (one per runs folder, so tests can isolate theirs)."""
    return _manager_for(str(runs_dir()), default_max_jobs())


@st.cache_resource(show_spinner=False)
def _secret_for(runs_dir: str) -> bytes:
    return sessions.server_secret(runs_dir)


def server_secret() -> bytes:
    """The secret of the runs folder that signs session links (read once per process)."""
    return _secret_for(str(manager().runs_dir))


@st.cache_resource(show_spinner=False)
def _datasets_for(data_dir: str, cache_dir: str) -> DatasetCache:
    return DatasetCache()


def dataset_cache() -> DatasetCache:
    """The process-wide dataset cache, shared by the pages (one per data and cache folders)."""
    return _datasets_for(os.environ.get("LAPMUSIC_DATA_DIR", ""), str(cache_dir()))
