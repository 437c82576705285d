"""Training tab: live loss curves (LAE and random on the same axes), progress with ETA, Stop and Resume.

Training runs in worker processes of the job manager; this page only reads the run folders
(``metrics.jsonl``, ``status.json``) and the manager's queue, and redraws itself every few seconds with
``st.fragment(run_every=...)`` while a shown run is active. A queued run shows its position and when it
should start and finish (from measured epoch times, :mod:`lapmusic.jobs.estimate`); a run that several sessions
follow (identical settings) says so, and Stop there only unfollows it unless you are its last follower.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import streamlit as st

from lapmusic.jobs.runs import CANCELLED, DAMAGED, FAILED, FINISHED, INTERRUPTED, QUEUED, RUNNING, summarize_run
from lapmusic.training.rundir import read_history

from .. import fairness, guard, labels, server, session
from ..sidebar import Settings

CURVES = (
    "How to read the curves: an **epoch** is one pass of the network over all the training pieces (0 = before "
    "any training). The top curves (**NLL**) say how surprised the network is by what really comes next in the "
    "music: lower is better; the dotted line is measured on the pieces it learns from, the solid one on pieces "
    "it never learns from (validation), which is the honest one. When the solid line stops going down, more "
    "training no longer helps. The bottom curves (**ACC**) say how many notes it guesses right: higher is "
    "better. The grey dashed lines are what a trivial rule scores; a network that beats them has learned "
    "something about music over time."
)


def render(settings: Settings) -> None:
    st.subheader("Training")
    note = st.session_state.pop("resume_error", None)
    if note:
        st.error(note)
    note = st.session_state.pop("stop_note", None)
    if note:
        st.info(note)
    runs = session.focused_runs()
    if not runs:
        st.info(
            "Press **Train** in the sidebar to start a run, or reopen past runs on the **Runs** tab to compare "
            "their curves here. " + (guard.guarded(expected_time, settings) or "")
        )
        return
    states = _states(runs)
    if RUNNING in states:
        _live(runs)
    elif QUEUED in states:
        _waiting(runs)  # only waiting: a slower poll (a class of pages polling costs the server CPU)
    else:
        _draw(runs)


def expected_time(settings: Settings) -> str:
    """How long the sidebar's runs should take on this server: a range from the runs it has trained, never a
    promise the machine's load can break."""
    from lapmusic.jobs.estimate import predict

    manager = server.manager()
    if settings.dataset is None:
        return ""
    measured = manager.estimator.measured()
    durations = [predict(c.to_dict(), measured) for c in settings.configs()]
    waiting = manager.queued_count
    queue = f" {waiting} runs are waiting in the queue now, which adds to that." if waiting else ""
    if not durations or not all(d.measured for d in durations):
        return ("How long a run takes depends on its settings and on how busy the server is: this server has not "
                "trained runs like these yet, so once you press Train this tab shows an estimate." + queue)
    low, high = min(d.low for d in durations), max(d.high for d in durations)
    return (f"With these settings a run should take about {labels.format_range(low, high)} here (estimated from "
            f"the runs this server has trained; a busier server takes longer).{queue}")


def _states(runs: list[Path]) -> set[str]:
    manager = server.manager()
    return {s.state for s in (summarize_run(run, manager) for run in runs) if s is not None}


def _live(runs: list[Path]) -> None:
    """Redraw every ``PollBudget`` interval: the base 1.5 s, longer when many pages refresh at once."""
    every = fairness.poll_budget.seconds(session.session_id(), fairness.poll_seconds())
    st.fragment(run_every=every)(_live_refresh)(runs)


def _live_refresh(runs: list[Path]) -> None:
    # The interval is fixed when the fragment is drawn (the browser's timer); the next full rerun (a click, a
    # run that finishes) draws it again with the interval of that moment.
    started = time.thread_time()
    states = _drawn_states(runs)
    fairness.poll_budget.record(session.session_id(), time.thread_time() - started)
    if RUNNING not in states:
        st.rerun()  # the whole app: poll as fast as needed, refresh the other tabs with the finished runs


def _drawn_states(runs: list[Path]) -> set[str]:
    """Draw the runs (a fragment rerun is not inside the page's guard) and return their states; after a
    drawing error, the states read from the run folders."""
    states = guard.guarded(_draw, runs)
    return states if states is not None else _states(runs)


def _waiting(runs: list[Path]) -> None:
    every = max(5.0, 3 * fairness.poll_budget.seconds(session.session_id(), fairness.poll_seconds()))
    st.fragment(run_every=every)(_waiting_refresh)(runs)


def _waiting_refresh(runs: list[Path]) -> None:
    states = _drawn_states(runs)
    if QUEUED not in states or RUNNING in states:
        st.rerun()


def _draw(runs: list[Path]) -> set[str]:
    """Draw the runs' progress and curves; returns their states (the fragments decide on them).

    Pages take turns (``fairness.refresh_gate``), so that under load no page waits behind the others."""
    with fairness.refresh_gate:
        return _draw_now(runs)


def _draw_now(runs: list[Path]) -> set[str]:
    manager = server.manager()
    histories: dict[str, list[dict]] = {}
    summaries = [s for s in (summarize_run(run, manager) for run in runs) if s is not None]
    # LAE first, so that it keeps the same colour in every comparison.
    summaries.sort(key=lambda s: s.config.get("init") != "lae")
    several_datasets = len({s.config.get("dataset") for s in summaries}) > 1
    estimates = manager.estimates() if any(s.state in (QUEUED, RUNNING) for s in summaries) else {}
    for summary in summaries:
        run = summary.run_dir
        label = _unique(labels.run_label(summary.config, with_dataset=several_datasets), histories)
        histories[label] = read_history(run)  # well-formed lines only: a damaged file cannot break the page
        guard.guarded(_status_line, summary, manager.job_for_run(run), estimates)
    if any(histories.values()):
        st.plotly_chart(_loss_figure(json.dumps(histories)), key="loss_chart")  # the runs in their order
        st.caption(CURVES)
        _epoch_table(histories)
    else:
        st.caption("The loss curves appear here after the first epoch.")
    return {s.state for s in summaries}


@functools.lru_cache(maxsize=32)
def _loss_figure(histories_json: str):
    """The loss figure, built once per state of the curves and shared by every page that shows them (a class
    follows the same runs): building it is the costly part of a refresh, and Streamlit only reads it."""
    from lapmusic.plots import loss_figure

    return loss_figure(json.loads(histories_json))


def _unique(label: str, taken: dict) -> str:
    candidate, n = label, 2
    while candidate in taken:
        candidate, n = f"{label} ({n})", n + 1
    return candidate


def _status_line(summary, job, estimates: dict) -> None:
    run, state, status = summary.run_dir, summary.state, summary.status
    title = summary.title
    epochs = status.get("epochs") or summary.config.get("epochs")
    epoch = status.get("epoch") or summary.epochs_done
    me = session.session_id()
    box = st.container(border=True)
    if summary.elsewhere:
        box.info(
            f"**{title}** is {state} in another process (another app server or the `lapmusic` command): "
            f"epoch {epoch} of {epochs}, {status.get('message') or ''}. Its curves update here; stop it there."
        )
    elif state == RUNNING:
        estimate = estimates.get(job.id) if job is not None else None
        text = f"**{title}** — {epoch} of {epochs} epochs done · {status.get('message') or 'training'}"
        if estimate is not None:
            text += f" · about {labels.format_range(*estimate['finish_range'])} left"
        cols = box.columns([5, 1])
        fraction = status.get("fraction")
        cols[0].progress(float(fraction) if isinstance(fraction, (int, float)) else 0.0, text=text)
        _stop_button(cols[1], job, me)
    elif state == QUEUED:
        estimate = estimates.get(job.id) if job is not None else None
        cols = box.columns([5, 1])
        if estimate is not None:
            rough = "" if estimate["measured"] else " (a rough guess: nothing like it has trained on this server yet)"
            cols[0].info(
                f"**{title}** is waiting for a free slot: position {estimate['position']} of "
                f"{server.manager().queued_count} in the queue · starts in about "
                f"{labels.format_range(*estimate['start_range'])}, done in about "
                f"{labels.format_range(*estimate['finish_range'])}{rough}. Times are estimated from the runs "
                "this server has trained; a busy machine makes them longer."
            )
        else:
            cols[0].info(f"**{title}** is waiting in the queue.")
        _stop_button(cols[1], job, me)
    elif state == FINISHED:
        box.success(f"**{title}** finished{_final_text(summary.final)}. Listen to it on the **Samples** tab.")
    elif state == CANCELLED:
        if summary.resumable:
            box.info(
                f"**{title}** was stopped after epoch {epoch} of {epochs}. The best model so far can be sampled "
                "on the **Samples** tab; resume it to train on."
            )
            _resume_button(box, summary)
        else:
            box.info(f"**{title}** was stopped before its first checkpoint; start a new run to train.")
    elif state == FAILED:
        box.error(f"**{title}** failed: {status.get('error') or (job.error if job else None) or 'unknown error'}")
        _resume_button(box, summary)
    elif state == DAMAGED:
        box.error(f"**{title}** cannot be used: {status.get('error')}. Start it again in a new run.")
    elif state == INTERRUPTED:
        box.warning(
            f"**{title}** was interrupted (its training process stopped: a server restart or a crash) after "
            f"epoch {epoch} of {epochs}." + (" Resume it to continue from its last checkpoint." if summary.resumable
                                              else "")
        )
        _resume_button(box, summary)
    if job is not None and len(job.sessions) > 1:
        box.caption(f"Followed by {len(job.sessions)} sessions with exactly these settings: it trains once for all.")
    box.caption(f"Run folder: `{labels.display_path(run)}`")


def _stop_button(column, job, me: str) -> None:
    """Stop (the last follower, or the teacher), Stop following (others still follow it), or nothing."""
    if job is None:
        return
    teacher = session.is_teacher()
    if me not in job.sessions and not teacher:
        return
    alone = set(job.sessions) <= {me}
    label = "Stop" if alone or teacher else "Stop following"
    if job.state == QUEUED and (alone or teacher):
        label = "Remove"
    column.button(label, key=f"stop-{job.id}", on_click=_stop, args=(job.id,))


def _stop(job_id: str) -> None:
    from lapmusic.core.errors import LapMusicError

    try:
        outcome = server.manager().cancel(job_id, session.session_id(), teacher=session.is_teacher())
    except LapMusicError as exc:
        st.session_state["resume_error"] = str(exc)
        return
    if outcome == "unfollowed":
        st.session_state["stop_note"] = ("You no longer follow that run; it goes on for the others who started "
                                         "it with the same settings.")


def _final_text(final: dict | None) -> str:
    if not final:
        return ""
    nll = final.get("nll")
    acc = final.get("acc")
    bits = []
    if isinstance(nll, (int, float)):
        bits.append(f"test NLL {nll:.3f}")
    if isinstance(acc, (int, float)):
        bits.append(f"test ACC {acc:.1f}%")  # lapmusic.model.metrics gives ACC in percent
    return ": " + ", ".join(bits) if bits else ""


def _resume_button(box, summary) -> None:
    if summary.resumable:
        box.button("Resume", key=f"resume-{summary.name}", on_click=resume_run, args=(summary.run_dir,))


def resume_run(run_dir: Path) -> None:
    """Queue the run in ``run_dir`` again from its last checkpoint (a widget callback)."""
    from lapmusic.core.errors import LapMusicError
    from lapmusic.core.io import read_json

    try:
        from lapmusic.training.config import TrainConfig

        TrainConfig.from_dict(read_json(run_dir / "config.json") or {})  # a damaged config is refused here
        server.manager().submit(None, session=session.session_id(), client=session.client_ip(), run_dir=run_dir,
                                resume=True)
    except LapMusicError as exc:
        st.session_state["resume_error"] = str(exc)
        return
    session.set_focus([run_dir])
    session.go_to("Training")


def _epoch_table(histories: dict[str, list[dict]]) -> None:
    rows = []
    for label, history in histories.items():
        for row in history:
            rows.append(
                {
                    "run": label,
                    "epoch": row.get("epoch"),
                    "train NLL": row.get("train_nll"),
                    "valid NLL": row.get("valid_nll"),
                    "valid ACC": row.get("valid_acc"),
                    "seconds": row.get("seconds"),
                }
            )
    with st.expander("Numbers per epoch"):
        st.dataframe(rows, hide_index=True)
