"""Datasets for the pages: loaded once per server process, without blocking a page while they load."""

from __future__ import annotations

import streamlit as st

from .labels import format_seconds
from .server import dataset_cache

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
