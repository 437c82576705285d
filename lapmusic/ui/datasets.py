"""Datasets for the pages: loaded once per server process without blocking a page; built from uploads.

A dataset built from a session's uploads (:func:`build_upload`) belongs to that session unless shared on
purpose, and the uploads are released once it is built.
"""

from __future__ import annotations

import logging

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from lapmusic.core.errors import LapMusicError

from . import session, uploads
from .labels import format_seconds
from .server import dataset_cache

log = logging.getLogger(__name__)

BUILD_SECONDS = {"bach": 90.0}
"""Typical first-build time, for the estimate shown before the build reports its own progress."""


def get_dataset(key: str):
    """A dataset, loaded once per server process; never blocks the page on a long load or build.

    The load runs in its own thread (:class:`~lapmusic.data.cache.DatasetCache`). When it is not done, the
    page shows its progress with an estimate of the time left, redrawn every second by a fragment that reruns
    the app when the data is ready, and stops here (``st.stop``): the rest of the app stays usable meanwhile.
    """
    entry = dataset_cache().start(key)
    if not entry.done.wait(0.5):
        _loading(key)
        st.stop()
    return entry.wait()


@st.fragment(run_every=1.0)
def _loading(key: str) -> None:
    entry = dataset_cache().start(key)
    if entry.done.is_set():
        st.rerun()
    eta = entry.eta_seconds(BUILD_SECONDS.get(key))
    text = f"Preparing {key}: {entry.message} ({format_seconds(entry.elapsed)} so far"
    text += f", about {format_seconds(eta)} left)" if eta is not None else ")"
    if key == "bach":
        text += ". This happens once per installation; `lapmusic datasets prepare bach` does it before the class."
    st.progress(max(0.0, min(1.0, entry.fraction)), text=text)


def upload_key() -> str:
    """The upload widget's key; a new one after each build, so the widget comes back empty."""
    return f"uploads_{st.session_state.get('upload_round', 0)}"


def build_upload() -> None:
    """Build a dataset from this session's uploads (the sidebar's button), then release the uploads.

    The dataset belongs to this browser session (:func:`lapmusic.data.user.save_user_dataset` with the
    session as owner) unless "share" is ticked; an existing name is refused, never replaced. The result, or
    the reason, goes to ``st.session_state.upload_report`` for the sidebar to show.
    """
    from lapmusic.data.user import UploadLimits, check_upload, dataset_from_midi, save_user_dataset

    state = st.session_state
    files = state.get(upload_key()) or []
    name = (state.get("upload_name") or "my songs").strip() or "my songs"
    owner = None if state.get("upload_shared") else session.session_id()
    try:
        # Count and sizes first: an upload over the per-upload limits is refused before a byte is copied.
        check_upload([f.size for f in files], UploadLimits.from_env())
        dataset, bad = dataset_from_midi([(f.name, f.getvalue()) for f in files], name)
        key = save_user_dataset(dataset, owner=owner)
    except LapMusicError as exc:
        state.upload_report = {"error": str(exc), "bad": []}
        return
    except Exception as exc:  # noqa: BLE001 - never a traceback in the page
        log.exception("could not build a dataset from uploads")
        state.upload_report = {"error": f"Could not build the dataset ({type(exc).__name__}: {exc}).", "bad": []}
        return
    used = len(dataset.train) + len(dataset.valid) + len(dataset.test)
    state.upload_report = {"key": key, "used": used, "bad": [(b.name, b.reason) for b in bad]}
    state.dataset_choice = key  # select it (the options list gains it on this rerun)
    state.upload_round = state.get("upload_round", 0) + 1  # the widget comes back empty...
    if (ctx := get_script_run_ctx()) is not None:  # ...and the server lets go of its files at once
        uploads.release_files(ctx.session_id, [f.file_id for f in files])
