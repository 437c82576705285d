"""Samples tab: generate music from a finished (or best-so-far) run, see it, hear it, download MIDI and WAV."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ...jobs import list_runs, newest_lae_first
from .. import common
from ..sidebar import Settings

MAX_AUDIO_SECONDS = 300.0
PRIMERS = {"none": "silence", "piece": "the start of a test piece", "chord": "a chord"}


@st.cache_resource(show_spinner=False, max_entries=8)
def _load_model(run_dir: str, mtime_ns: int):
    from ...train import load_run

    return load_run(run_dir, device="cpu")  # sampling a small RNN is fast on the CPU; keeps the GPU for training


def _model_mtime(run_dir: Path) -> int:
    for name in ("best.pt", "checkpoint.pt"):
        try:
            return (run_dir / name).stat().st_mtime_ns
        except OSError:
            continue
    return 0


def step_seconds_for(dataset_key: str) -> float:
    """Seconds per frame of a dataset, for MIDI and audio."""
    from ...data import DATASETS

    info = DATASETS.get(dataset_key)
    if info is not None:
        return float(info.step_seconds)
    return float(common.get_dataset(dataset_key).step_seconds)


def render(settings: Settings) -> None:
    st.subheader("Samples: let the network compose")
    runs = [r for r in list_runs(manager=common.manager()) if r.has_model]
    if not runs:
        st.info("No trained model yet. Train a run from the sidebar; after its first epoch you can sample from it.")
        return
    names = [str(r.run_dir) for r in runs]
    by_name = {str(r.run_dir): r for r in runs}
    focus = [str(p) for p in common.focused_runs() if str(p) in by_name]
    focus.sort(key=lambda p: by_name[p].config.get("init") != "lae")  # the pre-trained model by default
    if st.session_state.get("sample_run") not in by_name:
        # A new session opens on the newest LAE run (the pre-trained model), not on whatever ran last.
        st.session_state.sample_run = focus[0] if focus else str(newest_lae_first(runs)[0].run_dir)
    chosen = st.selectbox(
        "Run", names, key="sample_run",
        format_func=lambda p: f"{Path(p).name} ({by_name[p].state}, {by_name[p].epochs_done} epochs)",
    )
    run = by_name[chosen]
    if run.state not in ("finished",):
        st.caption("This run is not finished: sampling uses its best model so far.")

    left, right = st.columns(2)
    temperature = left.slider(
        "Temperature", min_value=0.0, max_value=2.0, value=1.0, step=0.05, key="temperature",
        help="Below 1: safer, more repetitive; above 1: wilder. 0 plays every key with probability >= 0.5.",
    )
    step = step_seconds_for(run.config["dataset"]) if run.config.get("dataset") else 0.25
    longest = max(8, int(MAX_AUDIO_SECONDS / step) // 8 * 8)  # keeps the WAV a few MB at most
    steps = left.number_input(
        f"Length (frames of {step:g} s, at most {longest})", min_value=8, max_value=longest, value=min(64, longest),
        step=8, key=f"steps-{longest}",
    )
    max_poly = left.number_input(
        "Max notes at once (0 = no limit)", min_value=0, max_value=12, value=6, key="max_polyphony"
    )
    seed = left.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, key="sample_seed")
    primer_kind = right.radio("Start from", list(PRIMERS), format_func=PRIMERS.get, key="primer_kind")
    primer_spec = "none"
    if primer_kind == "piece":
        dataset_key = run.config.get("dataset")
        n_test = len(common.get_dataset(dataset_key).test) if dataset_key else 0
        if n_test == 0:
            right.warning("This run's dataset has no test pieces; start from silence or a chord.")
            primer_spec = "none"
        else:
            index = right.number_input(
                f"Test piece (0 to {n_test - 1})", min_value=0, max_value=n_test - 1, value=0,
                key=f"primer_piece-{dataset_key}",
            )
            frames = right.number_input("Primer frames", min_value=1, max_value=256, value=8, key="primer_frames")
            primer_spec = f"test:{int(index)}:{int(frames)}"
    elif primer_kind == "chord":
        chord = right.text_input(
            "Chord (note names or MIDI numbers)", value="C4,E4,G4", max_chars=80, key="primer_chord"
        )
        frames = right.number_input("Held for frames", min_value=1, max_value=64, value=2, key="primer_chord_frames")
        primer_spec = f"chord:{chord.replace(' ', '')}:{int(frames)}"

    if st.button("Generate", type="primary", key="generate"):
        with st.spinner("Composing..."):
            _generate(run.run_dir, run.config.get("dataset"), float(temperature), int(steps), int(max_poly) or None,
                      int(seed), primer_spec)
    error = st.session_state.pop("sample_error", None)
    if error:
        st.error(error)
    _show_sample()


def _generate(run_dir: Path, dataset_key: str | None, temperature: float, steps: int, max_polyphony,
              seed: int, primer_spec: str) -> None:
    """Sample, render MIDI and WAV, keep them in the session (shown until the next one)."""
    from ...audio import render_wav
    from ...errors import LapMusicError
    from ...midi import midi_to_bytes, roll_to_midi
    from ...sample import generate, parse_primer

    try:
        loaded = _load_model(str(run_dir), _model_mtime(run_dir))
        dataset = common.get_dataset(dataset_key) if primer_spec.startswith("test:") else None
        primer = parse_primer(primer_spec, dataset_key, dataset=dataset)
        roll = generate(
            loaded.model, steps=steps, temperature=temperature, primer=primer, max_polyphony=max_polyphony,
            seed=seed, n_samples=1, device=loaded.device,
        )[0]
        k = 0 if primer is None else len(primer)
        step = step_seconds_for(dataset_key) if dataset_key else 0.25
        midi = roll_to_midi(roll, step_seconds=step, split_at=k if k else None)
        audio = render_wav(midi, min_seconds=len(roll) * step)
    except LapMusicError as exc:
        st.session_state.sample_error = str(exc)
        return
    except Exception as exc:  # noqa: BLE001 - shown as a message, never a traceback
        common.log.exception("sampling failed")
        st.session_state.sample_error = f"Sampling failed ({type(exc).__name__}: {exc})."
        return
    stem = f"{run_dir.name}-t{temperature:g}-seed{seed}"
    st.session_state.sample = {
        "roll": roll, "primer_frames": k, "step_seconds": step, "midi": midi_to_bytes(midi), "wav": audio.wav,
        "warning": audio.warning, "silent": audio.silent, "stem": stem, "run": run_dir.name,
        "epoch": loaded.epoch, "checkpoint": loaded.checkpoint,
    }


def _show_sample() -> None:
    sample = st.session_state.get("sample")
    if not sample:
        return
    from ...plots import piano_roll_figure

    roll, k = sample["roll"], sample["primer_frames"]
    title = f"{sample['run']} (model of epoch {sample['epoch']})" + (f", primer = first {k} frames" if k else "")
    st.markdown(f"**{title}**")
    st.audio(sample["wav"], format="audio/wav")
    if sample["silent"]:
        st.warning("This sample has no notes. Try a higher temperature or another seed.")
    if sample["warning"]:
        st.caption(sample["warning"])
    cols = st.columns(2)
    cols[0].download_button(
        "Download MIDI", data=sample["midi"], file_name=f"{sample['stem']}.mid", mime="audio/midi",
        on_click="ignore", key="download_midi",
    )
    cols[1].download_button(
        "Download WAV", data=sample["wav"], file_name=f"{sample['stem']}.wav", mime="audio/wav",
        on_click="ignore", key="download_wav",
    )
    st.plotly_chart(
        piano_roll_figure(roll, primer_frames=k, step_seconds=sample["step_seconds"]), key="sample_roll"
    )
