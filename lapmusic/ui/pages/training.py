"""Training tab: live loss curves (LAE and random on the same axes), progress with ETA, Stop and Resume.

Training runs in the job manager's background threads; this page only reads the run folders
(``metrics.jsonl``, ``status.json``) and redraws itself every few seconds with ``st.fragment(run_every=...)``
while a shown run is active, so the rest of the app stays responsive.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ...jobs import CANCELLED, DAMAGED, FAILED, FINISHED, INTERRUPTED, QUEUED, RUNNING, summarize_run
from ...rundir import read_history
from .. import common
from ..sidebar import Settings


def render(settings: Settings) -> None:
    st.subheader("Training")
    note = st.session_state.pop("resume_error", None)
    if note:
        st.error(note)
    runs = common.focused_runs()
    if not runs:
        st.info(
            "Press **Train** in the sidebar to start a run (the defaults finish in about a minute on a laptop), "
            "or reopen past runs on the **Runs** tab to compare their curves here."
        )
        return
    if any(_is_active(run) for run in runs):
        _live(runs)
    else:
        _draw(runs)


def _is_active(run: Path) -> bool:
    """Queued or training, here or in another process (then its files still change)."""
    summary = summarize_run(run, common.manager())
    return summary is not None and summary.state in (QUEUED, RUNNING)


@st.fragment(run_every=common.poll_seconds())
def _live(runs: list[Path]) -> None:
    common.guarded(_draw, runs)  # a fragment rerun is not inside the page's guard
    if not any(_is_active(run) for run in runs):
        st.rerun()  # the whole app: stop polling, refresh the other tabs with the finished runs


def _draw(runs: list[Path]) -> None:
    manager = common.manager()
    histories: dict[str, list[dict]] = {}
    summaries = [s for s in (summarize_run(run, manager) for run in runs) if s is not None]
    # LAE first, so that it keeps the same colour in every comparison.
    summaries.sort(key=lambda s: s.config.get("init") != "lae")
    several_datasets = len({s.config.get("dataset") for s in summaries}) > 1
    for summary in summaries:
        run = summary.run_dir
        job = manager.job_for_run(run)
        label = _unique(common.run_label(summary.config, with_dataset=several_datasets), histories)
        histories[label] = read_history(run)  # well-formed lines only: a damaged file cannot break the page
        common.guarded(_status_line, run, summary, job, label)
    if any(histories.values()):
        from ...plots import loss_figure

        st.plotly_chart(loss_figure(histories), key="loss_chart")
        _epoch_table(histories)
    else:
        st.caption("The loss curves appear here after the first epoch.")


def _unique(label: str, taken: dict) -> str:
    candidate, n = label, 2
    while candidate in taken:
        candidate, n = f"{label} ({n})", n + 1
    return candidate


def _status_line(run: Path, summary, job, label: str) -> None:
    state = job.state if job is not None and job.active else summary.state
    status = summary.status
    epochs = status.get("epochs") or summary.config.get("epochs")
    epoch = status.get("epoch") or summary.epochs_done
    box = st.container(border=True)
    if summary.elsewhere:
        box.info(
            f"**{label}** is {state} in another process (another app server or the `lapmusic` command): "
            f"epoch {epoch} of {epochs}, {status.get('message') or ''}. Its curves update here; stop it there."
        )
    elif state == RUNNING and job is not None:
        eta = job.eta_seconds
        text = f"**{label}** — {epoch} of {epochs} epochs done · {job.message}"
        if eta is not None:
            text += f" · about {common.format_seconds(eta)} left"
        cols = box.columns([5, 1])
        cols[0].progress(job.fraction, text=text)
        cols[1].button("Stop", key=f"stop-{run.name}", on_click=common.manager().cancel, args=(job.id,))
    elif state == QUEUED and job is not None:
        position = common.manager().queue_position(job.id)
        cols = box.columns([5, 1])
        cols[0].info(f"**{label}** is waiting for a free slot: position {position} in the queue.")
        cols[1].button("Remove", key=f"stop-{run.name}", on_click=common.manager().cancel, args=(job.id,))
    elif state == FINISHED:
        box.success(f"**{label}** finished{_final_text(summary.final)}. Listen to it on the **Samples** tab.")
    elif state == CANCELLED:
        if summary.resumable:
            box.info(
                f"**{label}** was stopped after epoch {epoch} of {epochs}. The best model so far can be sampled "
                "on the **Samples** tab; resume it to train on."
            )
            _resume_button(box, summary)
        else:
            box.info(f"**{label}** was stopped before its first checkpoint; start a new run to train.")
    elif state == FAILED:
        box.error(f"**{label}** failed: {status.get('error') or (job.error if job else None) or 'unknown error'}")
        _resume_button(box, summary)
    elif state == DAMAGED:
        box.error(f"**{label}** cannot be used: {status.get('error')}. Start it again in a new run.")
    elif state == INTERRUPTED:
        box.warning(f"**{label}** was interrupted (the server stopped during training) after epoch {epoch}.")
        _resume_button(box, summary)
    box.caption(f"Run folder: `{common.display_path(run)}`")


def _final_text(final: dict | None) -> str:
    if not final:
        return ""
    nll = final.get("nll")
    acc = final.get("acc")
    bits = []
    if isinstance(nll, (int, float)):
        bits.append(f"test NLL {nll:.3f}")
    if isinstance(acc, (int, float)):
        bits.append(f"test ACC {acc:.1f}%")  # lapmusic.metrics gives ACC in percent
    return ": " + ", ".join(bits) if bits else ""


def _resume_button(box, summary) -> None:
    if summary.resumable:
        box.button("Resume", key=f"resume-{summary.name}", on_click=resume_run, args=(summary.run_dir,))


def resume_run(run_dir: Path) -> None:
    """Queue the run in ``run_dir`` again from its last checkpoint (a widget callback)."""
    from ...errors import LapMusicError
    from ...jobs import read_json

    try:
        from ...train import TrainConfig

        config = TrainConfig.from_dict(read_json(run_dir / "config.json") or {})
        common.manager().submit(config, session=common.session_id(), run_dir=run_dir, resume=True)
    except LapMusicError as exc:
        st.session_state["resume_error"] = str(exc)
        return
    common.set_focus([run_dir])
    common.go_to("Training")


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
