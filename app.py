"""The lapmusic app: ``streamlit run app.py``.

This file only wires the sidebar and the pages together; all Streamlit code lives in ``lapmusic/ui``.
"""

import streamlit as st

from lapmusic.ui import guard, server, session, sidebar  # noqa: F401 - server sets the process up on import
from lapmusic.ui.pages import data, pretraining, results, runs, samples, training

PAGES = {
    "Data": data.render,
    "Pre-training": pretraining.render,
    "Training": training.render,
    "Samples": samples.render,
    "Results": results.render,
    "Runs": runs.render,
}

st.set_page_config(page_title="lapmusic: pre-trained RNNs for music", page_icon="🎹", layout="wide")
session.open_session()
settings = guard.guarded(sidebar.render)
if settings is None:
    st.stop()  # the sidebar already shows why

tabs = st.tabs(list(PAGES), key=session.PAGE_KEY, on_change="rerun", bind="query-params")
for tab, render in zip(tabs, PAGES.values()):
    if tab.open:  # only the visible tab runs: a page that is not looked at costs nothing
        with tab:
            guard.guarded(render, settings)
