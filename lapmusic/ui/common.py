"""Shared helpers of the app pages: the job manager, the browser session, dataset cache, error guard.

Every page body runs inside :func:`guarded`, so that a user never sees a traceback: errors a user can
cause (``LapMusicError``) are shown as their message, anything else as a short apology plus the
exception's one-line summary, with the traceback in the server log.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

# Imported here, fully, before any page draws: plotly looks pandas up in ``sys.modules`` without importing
# it, so while one session's thread was still importing pandas (st.dataframe does it lazily), another
# session's chart saw the half-made module and failed with "partially initialized module 'pandas' has no
# attribute 'Series'" (26 times at once in the 30-student classroom run, docs/app.md).
import pandas  # noqa: F401
import streamlit as st
from streamlit import config as st_config

from lapmusic.core.errors import LapMusicError
from lapmusic.data.cache import DatasetCache, dataset_token
from lapmusic.jobs import sessions
from lapmusic.jobs.limits import default_max_jobs
from lapmusic.jobs.manager import JobManager
from lapmusic.jobs.runs import default_runs_dir

from . import slowclients

log = logging.getLogger("lapmusic.app")

# A browser that falls 500 messages behind is disconnected for real (it reconnects and catches up) instead
# of being dropped silently with its page frozen for ever (slowclients.py).
slowclients.install()

# No full garbage collection after every script run. Streamlit runs ``gc.collect(2)`` at the end of each run
# (``runner.postScriptGC``), fragment refreshes included; in this server (torch, plotly, pandas loaded: about
# 250 000 tracked objects) that is about 120 ms of CPU holding the GIL. Thirty live Training tabs asked for
# twenty runs a second, i.e. more GIL time than exists: the server fell minutes behind and pages saw their
# first curve up to 140 s after it was on disk (docs/app.md, "Sixth round"). Python's own generational
# collector still runs. ``.streamlit/config.toml`` says the same; this covers a server started elsewhere.
st_config.set_option("runner.postScriptGC", False, "lapmusic.ui.common")

PAGE_KEY = "page"  # the tabs' widget key and URL query parameter (?page=Training)


def poll_seconds() -> float:
    """How often live views refresh (``LAPMUSIC_POLL_SECONDS``, default 1.5 s)."""
    try:
        return max(0.2, float(os.environ.get("LAPMUSIC_POLL_SECONDS", "1.5")))
    except ValueError:
        return 1.5


POLL_CPU_SHARE = 0.25
"""The share of one CPU core that the live Training tabs of all pages together may use for their refreshes."""
POLL_FORGET_SECONDS = 60.0  # a page that has not refreshed for this long no longer counts (closed, or done)


class PollBudget:
    """How often each live page may refresh so that all of them together stay within a CPU budget.

    Every live Training tab re-reads its runs and redraws its curves each refresh, in the server's threads:
    tens of milliseconds of CPU each (the loss figure alone took 18 ms before it was shared). Thirty pages
    refreshing every 1.5 s needed more CPU than the server had on a busy 2-core machine; the refreshes queued
    up on the job manager's lock and some pages got no refresh at all for minutes (the classroom benchmark's
    pages that never drew a curve, docs/app.md). The interval is
    therefore ``max(base, pages x cpu / share)``: ``pages`` that refreshed in the last minute, ``cpu`` the
    measured CPU seconds of a refresh (moving average), ``share`` :data:`POLL_CPU_SHARE`. With 30 pages at
    40 ms: 4.8 s; with 8 pages: the base 1.5 s.
    """

    def __init__(self, share: float = POLL_CPU_SHARE, first_cpu: float = 0.04):
        self.share, self.cpu = share, first_cpu
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def seconds(self, page: str, base: float, now: float | None = None) -> float:
        """The refresh interval for ``page`` (and note that it polls); called when a page draws its live view."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._stamp(page, now)
            pages, cpu = len(self._seen), self.cpu
        return max(base, pages * cpu / self.share)

    def record(self, page: str, cpu_seconds: float, now: float | None = None) -> None:
        """``page`` refreshed, which took ``cpu_seconds`` of its thread's CPU time (moving average over ~10
        refreshes). The page counts as polling from here too: a page that only refreshes its fragment never
        calls :meth:`seconds` again and would otherwise drop out after :data:`POLL_FORGET_SECONDS`."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._stamp(page, now)
            self.cpu += 0.1 * (max(0.0, cpu_seconds) - self.cpu)

    def _stamp(self, page: str, now: float) -> None:
        self._seen[page] = now
        for other, seen in list(self._seen.items()):
            if now - seen > POLL_FORGET_SECONDS:
                del self._seen[other]


poll_budget = PollBudget()  # one per server process


class FairGate:
    """At most ``slots`` page refreshes at once (four in the app), let in strictly in the order they arrived.

    Under load the Training tabs' refreshes (one thread per page) competed for the GIL and the job manager's
    lock, which favour whichever thread ran last: in the classroom benchmark some pages got every refresh
    and others none for four minutes. Waiting here in a queue costs no CPU, and every page gets its turn.
    """

    def __init__(self, slots: int):
        self.slots = slots
        self._cond = threading.Condition()
        self._tickets = 0  # handed out
        self._done = 0  # finished

    def __enter__(self) -> "FairGate":
        with self._cond:
            ticket = self._tickets
            self._tickets += 1
            self._cond.wait_for(lambda: ticket < self._done + self.slots)
        return self

    def __exit__(self, *exc) -> None:
        with self._cond:
            self._done += 1
            self._cond.notify_all()


refresh_gate = FairGate(slots=4)  # one per server process


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
    from lapmusic.data.dataset import cache_dir

    return _datasets_for(os.environ.get("LAPMUSIC_DATA_DIR", ""), str(cache_dir()))


@st.cache_resource(show_spinner=False)
def _manager_for(runs_dir: str, max_jobs: int) -> JobManager:
    return JobManager(runs_dir, max_jobs=max_jobs)


def manager() -> JobManager:
    """The process-wide job manager (one per server; keyed by runs folder so tests can isolate)."""
    return _manager_for(str(default_runs_dir().resolve()), default_max_jobs())


@st.cache_resource(show_spinner=False)
def _secret_for(runs_dir: str) -> bytes:
    return sessions.server_secret(runs_dir)


def session_id() -> str:
    """This browser session's id: issued by the server, kept in the URL with its signature.

    ``?session=ID&token=SIG`` restores a session (a refresh, or the same link in another browser) only
    when ``SIG`` is the server's HMAC of ``ID``; a made-up or edited id gets a new session and a note.
    """
    state = st.session_state
    if "session_id" not in state:
        secret = _secret_for(str(manager().runs_dir))
        asked, token = st.query_params.get("session"), st.query_params.get("token")
        if sessions.verify(secret, asked, token):
            state.session_id, state.session_token = asked, token
        else:
            state.session_id, state.session_token = sessions.new_session(secret)
            if asked:
                state.session_note = "That session link is not valid here; this is a new session."
    if st.query_params.get("session") != state.session_id or st.query_params.get("token") != state.session_token:
        st.query_params["session"] = state.session_id
        st.query_params["token"] = state.session_token
    return state.session_id


def client_ip() -> str | None:
    """The browser's IP address (None on the server machine itself, where Streamlit reports none)."""
    try:
        ip = st.context.ip_address
    except Exception:  # noqa: BLE001 - outside a real browser session
        return None
    return ip if isinstance(ip, str) and ip else None  # AppTest gives a stand-in object


def is_teacher() -> bool:
    """True after the teacher password was entered in this session (see the Runs tab)."""
    return bool(st.session_state.get("teacher")) and sessions.teacher_password() is not None


def go_to(page: str) -> None:
    """Switch the tab shown; call from a widget callback (before the tabs are drawn)."""
    st.session_state[PAGE_KEY] = page


def focused_runs() -> list[Path]:
    """Run folders the Training / Pre-training pages show: the last started group or the runs reopened.

    After a page refresh or a server restart (a new Streamlit session with the same signed ``?session=``
    link) it is this session's latest group of runs again, read from the runs' ``job.json``.
    """
    if "focus" not in st.session_state:
        me = session_id()
        jobs = manager().jobs(me)
        if jobs:
            latest = jobs[-1]
            group = latest.group_of(me)
            chosen = [j for j in jobs if group is not None and j.group_of(me) == group] or [latest]
            set_focus([j.run_dir for j in chosen])
    return [Path(p) for p in st.session_state.get("focus", []) if Path(p).is_dir()]


def set_focus(run_dirs) -> None:
    st.session_state["focus"] = [str(Path(p)) for p in run_dirs]


# ------------------------------------------------------------------------------ datasets
def dataset_cache_token(key: str) -> str:
    """Changes when a user dataset is rebuilt under the same name (for caches keyed by dataset)."""
    return dataset_token(key)


BUILD_SECONDS = {"bach": 90.0}
"""Typical first-build time, for the estimate shown before the build reports progress: the Bach set took
62 s on a quiet 2-core machine and 180 s under load (docs/app.md)."""


def get_dataset(key: str):
    """A dataset, loaded once per server process; never blocks the page on a long load or build.

    The load runs in its own thread (``DatasetCache``). When it is not done, the page shows its progress
    with an estimate of the time left, redrawn every second by a fragment that reruns the app when the data
    is ready, and stops here (``st.stop``): the rest of the app stays usable meanwhile.
    """
    entry = datasets().start(key)
    if not entry.done.wait(0.5):
        _loading(key)
        st.stop()
    return entry.wait()


@st.fragment(run_every=1.0)
def _loading(key: str) -> None:
    entry = datasets().start(key)
    if entry.done.is_set():
        st.rerun()
    eta = entry.eta_seconds(BUILD_SECONDS.get(key))
    text = f"Preparing {key}: {entry.message} ({format_seconds(entry.elapsed)} so far"
    text += f", about {format_seconds(eta)} left)" if eta is not None else ")"
    if key == "bach":
        text += ". This happens once per installation; `lapmusic datasets prepare bach` does it before the class."
    st.progress(max(0.0, min(1.0, entry.fraction)), text=text)


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
        "output": "bernoulli",
        "nade_vocab": 0,
        "nade_repeat": False,
        "nade_repeat_window": 1,
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


def run_title(summary) -> str:
    """``bach · LAE · h128 · 14:05 · anna`` for a RunSummary (its job.json's time and student)."""
    return summary.title


def run_label(config: dict, *, with_dataset: bool = False) -> str:
    """``LAE · h128 · seed 0`` (`` · NADE`` for a NADE output, `` · NADE+skip`` with its previous-frame skip,
    `` · skip`` with the Bernoulli readout's skip, ``+vocab N`` with a chord vocabulary; the dataset first when
    runs of several datasets are compared)."""
    init = {"lae": "LAE", "random": "random"}.get(str(config.get("init")), str(config.get("init", "?")))
    label = f"{init} · h{config.get('hidden', '?')} · seed {config.get('seed', '?')}"
    if config.get("output") == "nade":
        label += " · NADE+skip" if config.get("nade_skip") else " · NADE"  # Bernoulli runs keep their usual label
        label += f"+vocab {config['nade_vocab']}" if config.get("nade_vocab") else ""
        label += "+repeat" if config.get("nade_repeat") else ""
        window = config.get("nade_repeat_window", 1) if config.get("nade_repeat") else 1
        label += f" {window}" if window > 1 else ""
    elif config.get("readout_skip"):
        label += " · skip"
    return f"{config.get('dataset', '?')} · {label}" if with_dataset else label
