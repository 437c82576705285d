"""Runs tab: every run folder on disk (the app's and the CLI's), to reopen, compare, sample, resume or delete.

Deleting needs you to be the run's only follower; the teacher (``LAPMUSIC_TEACHER_PASSWORD``, entered in
the box at the bottom) may stop or delete any run.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from lapmusic.jobs.runs import list_runs

from .. import labels, server, session
from ..sidebar import Settings
from .training import resume_run


def render(settings: Settings) -> None:
    st.subheader("Runs")
    manager = server.manager()
    note = st.session_state.pop("resume_error", None)
    if note:
        st.error(note)
    runs = list_runs(manager=manager)
    if not runs:
        st.info(f"No runs in `{labels.display_path(manager.runs_dir)}` yet. Train one from the sidebar.")
        _teacher_box()
        return
    mine = {str(job.run_dir) for job in manager.jobs(session.session_id())}
    st.dataframe(
        [
            {
                "run": r.title,
                "yours": "yes" if str(r.run_dir) in mine else "",
                "state": f"damaged: {r.status.get('error')}" if r.state == "damaged" else r.state,
                "dataset": r.config.get("dataset"),
                "init": r.config.get("init"),
                "hidden": r.config.get("hidden"),
                "epochs": f"{r.epochs_done}/{r.config.get('epochs', '?')}",
                "test NLL": f"{r.final['nll']:.3f}" if r.final and isinstance(r.final.get("nll"), float) else "",
                "saved": r.started,
                "folder": r.name,
            }
            for r in runs
        ],
        hide_index=True,
        column_config={
            "init": st.column_config.Column(help="how the network started: lae (pre-trained on the music first) "
                                                 "or random (random numbers)"),
            "hidden": st.column_config.Column(help="hidden units: the size of the network's memory"),
            "epochs": st.column_config.Column(help="passes over the training pieces done / planned (a run stops "
                                                   "early when it no longer improves)"),
            "test NLL": st.column_config.Column(help="how surprised the finished network is by the real next "
                                                     "moment of pieces it never saw: lower is better"),
        },
    )
    st.caption("**test NLL**: how surprised a finished network is by what really comes next in music it never "
               "saw (lower is better). **epochs**: passes over the training pieces, done / planned.")
    st.caption(f"Saved in `{labels.display_path(manager.runs_dir)}`; runs made with the `lapmusic` command appear here too.")
    by_name = {str(r.run_dir): r for r in runs}
    chosen = st.multiselect(
        "Choose one run, or several to compare", list(by_name), key="runs_chosen",
        format_func=lambda p: f"{by_name[p].title} ({Path(p).name})",
    )
    picked = [by_name[c] for c in chosen if c in by_name]
    cols = st.columns(4)
    # The callbacks read the choice from the session: it is always the one the user sees when clicking.
    cols[0].button("Open (curves on Training)", key="runs_open", disabled=not picked, on_click=_open)
    cols[1].button(
        "Sample from it", key="runs_sample", disabled=len(picked) != 1 or not picked[0].has_model,
        on_click=_sample,
    )
    resumable = len(picked) == 1 and picked[0].resumable
    cols[2].button("Resume training", key="runs_resume", disabled=not resumable, on_click=_resume)
    deletable = bool(picked) and all(r.state not in ("queued", "running") for r in picked)
    cols[3].button("Delete", key="runs_delete", disabled=not deletable, on_click=_delete,
                   help="Your own runs that nobody else follows; the teacher may delete any stopped run.")
    if len(picked) == 1 and not picked[0].resumable and picked[0].state not in ("queued", "running"):
        st.caption("Only stopped, failed or interrupted runs with a checkpoint can be resumed.")
    _teacher_box()


def _teacher_box() -> None:
    from lapmusic.jobs.sessions import teacher_password

    if teacher_password() is None:
        return
    with st.expander("Teacher"):
        if session.is_teacher():
            st.caption("Teacher mode: Stop on the Training tab stops any run, Delete here removes any stopped run.")
            st.button("Leave teacher mode", key="teacher_leave", on_click=lambda: st.session_state.pop("teacher", None))
            return
        st.text_input("Teacher password", type="password", key="teacher_password")
        st.button("Enter teacher mode", key="teacher_enter", on_click=_enter_teacher)
        if refused := st.session_state.pop("teacher_refused", None):
            st.error(refused)


def _enter_teacher() -> None:
    from lapmusic.jobs.sessions import TEACHER_GUARD

    candidate = st.session_state.get("teacher_password", "")
    st.session_state["teacher_password"] = ""  # not kept in the page
    refused = TEACHER_GUARD.attempt(session.client_ip(), candidate)  # counted per address: delay, then lockout
    if refused is None:
        st.session_state["teacher"] = True
    else:
        st.session_state["teacher_refused"] = refused


def _delete() -> None:
    from lapmusic.core.errors import LapMusicError

    manager = server.manager()
    for run_dir in _chosen():
        try:
            manager.delete(str(run_dir.resolve().relative_to(manager.runs_dir)), session.session_id(),
                           teacher=session.is_teacher())
        except (LapMusicError, ValueError) as exc:
            st.session_state["resume_error"] = str(exc)
            return
    st.session_state["runs_chosen"] = []


def _chosen() -> list[Path]:
    return [Path(p) for p in st.session_state.get("runs_chosen") or [] if Path(p).is_dir()]


def _open() -> None:
    if _chosen():
        session.set_focus(_chosen())
        session.go_to("Training")


def _sample() -> None:
    chosen = _chosen()
    if len(chosen) == 1:
        session.set_focus(chosen)
        st.session_state["sample_run"] = str(chosen[0])
        session.go_to("Samples")


def _resume() -> None:
    chosen = _chosen()
    if len(chosen) == 1:
        resume_run(chosen[0])
