"""The lapmusic app: ``streamlit run app.py``.

This file only wires the sidebar and the pages together; all Streamlit code lives in ``lapmusic/ui``.
"""

import streamlit as st

from lapmusic.ui import common, sidebar
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
common.session_id()  # server-issued and signed: a made-up ?session= link gets a new session
if note := st.session_state.pop("session_note", None):
    st.warning(note)
settings = common.guarded(sidebar.render)
if settings is None:
    st.stop()  # the sidebar already shows why

tabs = st.tabs(list(PAGES), key=common.PAGE_KEY, on_change="rerun", bind="query-params")
for tab, render in zip(tabs, PAGES.values()):
    if tab.open:  # only the visible tab runs: a page that is not looked at costs nothing
        with tab:
            common.guarded(render, settings)
