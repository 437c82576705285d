"""This browser session: who it is (a signed link), where it connects from, what it shows.

A session id is issued by the server and kept in the URL with its signature (``?session=ID&token=SIG``), so a
page refresh or the same link in another browser restores it; a made-up or edited link gets a new session
(:mod:`lapmusic.jobs.sessions`). The session also remembers the runs it focuses on (the Training and
Pre-training tabs show them), the tab shown (``?page=``) and whether the teacher password was entered.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from lapmusic.jobs import sessions
from lapmusic.jobs.limits import client_address

from .server import manager, server_secret

PAGE_KEY = "page"  # the tabs' widget key and URL query parameter (?page=Training)


def open_session() -> str:
    """This browser session's id (see :func:`session_id`); says so when the link it came with was not valid."""
    me = session_id()
    if note := st.session_state.pop("session_note", None):
        st.warning(note)
    return me


def session_id() -> str:
    """This browser session's id: issued by the server, kept in the URL with its signature.

    ``?session=ID&token=SIG`` restores a session (a refresh, or the same link in another browser) only
    when ``SIG`` is the server's HMAC of ``ID``; a made-up or edited id gets a new session and a note.
    """
    state = st.session_state
    if "session_id" not in state:
        secret = server_secret()
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
    """The browser's address as the per-computer limit counts it (:func:`~lapmusic.jobs.limits.client_address`):
    None on the server machine itself (a loopback address, or none reported)."""
    try:
        ip = st.context.ip_address
    except Exception:  # noqa: BLE001 - outside a real browser session
        return None
    return client_address(ip) if isinstance(ip, str) else None  # AppTest gives a stand-in object


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
    """Show these run folders on the Training and Pre-training tabs."""
    st.session_state["focus"] = [str(Path(p)) for p in run_dirs]
