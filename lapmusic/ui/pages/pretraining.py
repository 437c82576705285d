"""Pre-training tab: the linear autoencoder's singular value spectrum, energy captured at p, solver, time."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from lapmusic.core.io import read_json

from .. import fairness, labels, server, session
from ..sidebar import Settings

PLAIN = (
    "What this page shows, in plain words: before the network learns anything, the pre-training step (a "
    "*linear autoencoder*, LAE) looks at all the training music at once and finds the few patterns that best "
    "summarise \"what has just been played\", the most recent moments counting most. The network then starts "
    "with those patterns as its memory, instead of random numbers. The blue line shows how important each "
    "pattern is, the most important first: a line that falls fast means a few patterns already hold most of "
    "the music's recent past. The orange line adds them up; where it crosses the marker **p** (the number of "
    "hidden units you chose) tells how much of that recent past a memory of your size can hold."
)
ENERGY_HELP = ("How much of the recent past of the training music the network's starting memory can rebuild: "
               "100% would be all of it. More hidden units hold more.")

EXPLANATION = (
    "Each point of the blue line is a singular value of the matrix that stacks the (reversed) history of every "
    "training piece, lag k weighted by gamma^k (gamma = 0.3 by default, so the recent past dominates): it "
    "measures how much of that history one direction of the linear autoencoder's state explains. The orange "
    "line is the share of the total energy kept by the first components; its height at the marker p (your "
    "hidden size) is how much of the weighted history the p-dimensional LAE state can reconstruct. The "
    "pre-trained network starts with W_in = alpha A, W_rec = B and a ridge readout fitted to its states. What "
    "that start was measured to buy (docs/results.md): before any training it predicts the next frame far "
    "better than a random network (validation NLL 10.4 against 61 nats on JSB, 11.1 on the Bach set) and it "
    "stays ahead at every epoch; with the full training sets it ends slightly better on Nottingham, MuseData "
    "and Piano-midi.de (test NLL 0.06-0.09 lower) and level on JSB (8.66 against 8.63). The energy share says how much of the past the state keeps, not how well it predicts "
    "the next frame."
)


def _details() -> None:
    with st.expander("The mathematics behind the chart"):
        st.caption(EXPLANATION)


@st.cache_resource(show_spinner=False, max_entries=16)
def _load_lae(path: str, mtime_ns: int):
    from lapmusic.lae.autoencoder import LinearAutoencoder

    return LinearAutoencoder.load(path)


def _lae_runs() -> list[Path]:
    runs = []
    for run in session.focused_runs():
        config = read_json(run / "config.json") or {}
        if config.get("init") == "lae":
            runs.append(run)
    return runs


def render(settings: Settings) -> None:
    st.subheader("Pre-training: the linear autoencoder")
    runs = _lae_runs()
    if not runs:
        st.info(
            "Train with the LAE initialisation (or both) from the sidebar, or reopen an LAE run on the Runs "
            "tab: its spectrum appears here as soon as the pre-training step is done."
        )
        st.markdown(PLAIN)
        _details()
        return
    run = runs[0]
    if len(runs) > 1:
        run = Path(st.selectbox("Run", [str(r) for r in runs], format_func=lambda p: Path(p).name, key="lae_run"))
    path = run / "lae.npz"
    if not path.is_file():
        job = server.manager().job_for_run(run)
        if job is not None and job.active:
            _wait_for_lae(run)
        else:
            st.warning(f"Run {run.name} has no pre-trained LAE saved (lae.npz is missing).")
        return
    _show(run, path, settings)


@st.fragment(run_every=fairness.poll_seconds())
def _wait_for_lae(run: Path) -> None:
    job = server.manager().job_for_run(run)
    if (run / "lae.npz").is_file() or job is None or not job.active:
        st.rerun()  # the whole page: the spectrum can be drawn now (or never will be)
    if job.state == "queued":
        st.info(f"{run.name} is waiting in the queue; its pre-training starts when a slot is free.")
    else:
        st.info(f"Pre-training in progress for {run.name}: {job.message}")


def _show(run: Path, path: Path, settings: Settings) -> None:
    from lapmusic.plots import spectrum_figure

    lae = _load_lae(str(path), path.stat().st_mtime_ns)
    summary = lae.summary() if hasattr(lae, "summary") else {}
    energy = getattr(lae, "energy_per_component", None)
    energy = energy() if callable(energy) else energy
    st.markdown(PLAIN)
    st.plotly_chart(spectrum_figure(lae.singular_values, lae.p, energy=energy), key="lae_spectrum")
    captured = lae.energy_captured() if callable(getattr(lae, "energy_captured", None)) else lae.energy_captured
    cols = st.columns(4)
    cols[0].metric("Hidden units p", f"{lae.p}", help="The size of the network's memory: numbers it keeps "
                   "about the music so far, updated at every moment.")
    cols[1].metric("Energy captured at p", f"{100 * float(captured):.1f}%", help=ENERGY_HELP)
    cols[2].metric("Solver", str(summary.get("solver", "-")),
                   help="How the patterns were computed: exact, from the small Gram matrix of the data (gram, as "
                   "exact as that up to rounding), or a faster approximation (approx).")
    seconds = summary.get("seconds")
    cols[3].metric("Time to fit", labels.format_seconds(seconds) if seconds is not None else "-",
                   help="How long the pre-training took, before the first epoch.")
    st.caption(f"Energy captured at p: {ENERGY_HELP}")
    _details()
    st.caption(f"Run: {run.name} · dataset {(read_json(run / 'config.json') or {}).get('dataset', '?')}")
