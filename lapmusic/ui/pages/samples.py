"""Samples tab: let a trained run compose; hear the LAE run and the random run side by side.

A click draws one or more variations (heard side by side), from silence, a chord, the start of a dataset
piece or an uploaded MIDI file (continued in its tempo and time signature), in a chosen instrument and
loudness. The limits are the CLI's (``lapmusic.sampling.limits``).

Every sample is saved in its run folder (``lapmusic.sampling.store``: ``RUNDIR/samples/<name>.mid``, ``.json``,
``.npz``, ``.wav``) and listed below, so it can be played and downloaded again later. The player
(``lapmusic.ui.player``) draws the piano roll with a playhead that follows the audio.
"""

from __future__ import annotations

import logging
from pathlib import Path

import streamlit as st

from lapmusic.jobs.runs import list_runs

from .. import datasets, labels, server, session
from ..sidebar import Settings

log = logging.getLogger(__name__)

PRIMERS = {"none": "silence", "piece": "the start of a test piece", "chord": "a chord", "midi": "my MIDI file"}
INSTRUMENTS = {0: "piano", 6: "harpsichord", 19: "church organ", 24: "nylon guitar", 40: "violin",
               48: "strings", 52: "choir", 73: "flute"}  # General MIDI programs
INIT_NAMES = {"lae": "LAE pre-trained", "random": "random init"}
NO_SAVED = "-"


@st.cache_resource(show_spinner=False, max_entries=8)
def _load_model(run_dir: str, mtime_ns: int):
    from lapmusic.training.results import load_run

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
    from lapmusic.data.catalog import DATASETS

    info = DATASETS.get(dataset_key)
    if info is not None:
        return float(info.step_seconds)
    return float(datasets.get_dataset(dataset_key).step_seconds)


def _default_run(runs, by_name) -> str:
    """The LAE run of this session's latest comparison; else the newest LAE run; else the newest run."""
    focus = [str(p) for p in session.focused_runs() if str(p) in by_name]
    focus.sort(key=lambda p: by_name[p].config.get("init") != "lae")
    if focus:
        return focus[0]
    lae = [str(r.run_dir) for r in runs if r.config.get("init") == "lae"]
    return lae[0] if lae else str(runs[0].run_dir)


def render(settings: Settings) -> None:
    from lapmusic.sampling.store import comparison_partner

    st.subheader("Samples: let the network compose")
    runs = [r for r in list_runs(manager=server.manager()) if r.has_model]
    if not runs:
        st.info("No trained model yet. Train a run from the sidebar; after its first epoch you can sample from it.")
        return
    names = [str(r.run_dir) for r in runs]
    by_name = {str(r.run_dir): r for r in runs}
    if st.session_state.get("sample_run") not in by_name:
        st.session_state.sample_run = _default_run(runs, by_name)
    chosen = st.selectbox(
        "Run", names, key="sample_run",
        format_func=lambda p: (f"{labels.run_label(by_name[p].config, with_dataset=True)} · {Path(p).name} "
                               f"({by_name[p].state}, {by_name[p].epochs_done} epochs)"),
    )
    run = by_name[chosen]
    partner = comparison_partner(run.config, ((r, r.config) for r in runs if r is not run))
    if run.state not in ("finished",):
        st.caption("This run is not finished: sampling uses its best model so far.")

    left, right = st.columns(2)
    temperature = left.slider(
        "Temperature", min_value=0.0, max_value=2.0, value=1.0, step=0.05, key="temperature",
        help="Below 1: safer, more repetitive; above 1: wilder. 0 plays every key with probability >= 0.5.",
    )
    from lapmusic.sampling.limits import MAX_VARIATIONS, longest_steps

    step = step_seconds_for(run.config["dataset"]) if run.config.get("dataset") else 0.25
    longest = max(8, longest_steps(step) // 8 * 8)  # keeps the WAV a few MB at most
    steps = left.number_input(
        f"Length (frames of {step:g} s, at most {longest})", min_value=8, max_value=longest, value=min(64, longest),
        step=8, key=f"steps-{longest}",
    )
    max_poly = left.number_input(
        "Max notes at once (0 = no limit)", min_value=0, max_value=12, value=6, key="max_polyphony"
    )
    seed = left.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, key="sample_seed")
    variations = left.number_input(
        "Variations per click", min_value=1, max_value=MAX_VARIATIONS, value=1, key="variations",
        help="Several continuations drawn at once from the same start, heard side by side.",
    )
    primer_spec, upload = _primer_controls(right, run.config.get("dataset"))
    program = right.selectbox("Instrument", list(INSTRUMENTS), format_func=INSTRUMENTS.get, key="program")
    velocity = right.slider("Loudness (MIDI velocity)", min_value=20, max_value=127, value=90, key="velocity")

    request = dict(temperature=float(temperature), steps=int(steps), max_polyphony=int(max_poly) or None,
                   seed=int(seed), primer_spec=primer_spec, upload=upload, variations=int(variations),
                   program=int(program), velocity=int(velocity))
    buttons = st.columns(2)
    if buttons[0].button("Generate", type="secondary" if partner is not None else "primary", key="generate",
                         help="Sample from the run chosen above."):
        with st.spinner("Composing..."):
            _generate([run.run_dir], run.config.get("dataset"), request)
    if partner is not None:
        pair = sorted([run, partner], key=lambda r: r.config.get("init") != "lae")  # LAE left, random right
        if buttons[1].button(
            "Listen side by side: LAE and random", key="generate_pair", type="primary",
            help="Sample the LAE run and the random run trained with the same settings, with the same seed, "
                 "primer and temperature: both draw from the same random numbers, so what differs is the model.",
        ):
            with st.spinner("Composing twice..."):
                _generate([r.run_dir for r in pair], run.config.get("dataset"), request)
    else:
        buttons[1].caption("No run with the other initialisation and the same settings: train *both* to compare.")
    error = st.session_state.pop("sample_error", None)
    if error:
        st.error(error)
    _show_fresh()
    _saved_samples(run, partner)


def _primer_controls(box, dataset_key: str | None) -> tuple[str, tuple | None]:
    """The primer widgets.

    Returns
    -------
    spec : str
        A ``lapmusic.sampling.primer.load_primer`` specification, or ``upload:NAME[:FRAMES]`` for an upload.
    upload : tuple of (str, bytes, int or None) or None
        An uploaded MIDI file's name, bytes and frames to keep (None: the whole file).
    """
    from lapmusic.sampling.limits import MAX_PRIMER_FRAMES

    primer_kind = box.radio("Start from", list(PRIMERS), format_func=PRIMERS.get, key="primer_kind")
    if primer_kind == "piece":
        n_test = len(datasets.get_dataset(dataset_key).test) if dataset_key else 0
        if n_test == 0:
            box.warning("This run's dataset has no test pieces; start from silence or a chord.")
            return "none", None
        index = box.number_input(
            f"Test piece (0 to {n_test - 1})", min_value=0, max_value=n_test - 1, value=0,
            key=f"primer_piece-{dataset_key}",
        )
        frames = box.number_input("Primer frames", min_value=1, max_value=MAX_PRIMER_FRAMES, value=8,
                                  key="primer_frames")
        return f"test:{int(index)}:{int(frames)}", None
    if primer_kind == "chord":
        chord = box.text_input("Chord (note names or MIDI numbers)", value="C4,E4,G4", max_chars=80, key="primer_chord")
        frames = box.number_input("Held for frames", min_value=1, max_value=64, value=2, key="primer_chord_frames")
        return f"chord:{chord.replace(' ', '')}:{int(frames)}", None
    if primer_kind == "midi":
        file = box.file_uploader(
            "Your MIDI file to continue", type=["mid", "midi"], key="primer_upload",
            help=f"Its start (at most {MAX_PRIMER_FRAMES} frames) is played, then the network goes on, "
                 "in the file's tempo and time signature.",
        )
        frames = box.number_input(f"Frames of it to use (0 = all, at most {MAX_PRIMER_FRAMES})", min_value=0,
                                  max_value=MAX_PRIMER_FRAMES, value=0, key="primer_upload_frames")
        if file is None:
            box.caption("Choose a .mid file; until then the sample starts from silence.")
            return "none", None
        return f"upload:{file.name}" + (f":{int(frames)}" if frames else ""), (file.name, file.getvalue(),
                                                                               int(frames) or None)
    return "none", None


def _generate(run_dirs: list[Path], dataset_key: str | None, request: dict) -> None:
    """Sample each run with the same request, save each variation in its run folder, show them until the next.

    A pair is saved under one shared sample name, so the saved list can show it side by side again.
    """
    from lapmusic.core.errors import LapMusicError
    from lapmusic.sampling.compose import sample_variations
    from lapmusic.sampling.meter import output_meter, primer_grid
    from lapmusic.sampling.primer import load_primer, primer_from_midi
    from lapmusic.sampling.store import new_sample_name

    shown = []
    try:
        spec = request["primer_spec"]
        user = (dataset_key or "").startswith("user:")
        dataset = datasets.get_dataset(dataset_key) if dataset_key and (user or spec.startswith("test:")) else None
        grid = primer_grid(dataset_key, dataset)
        if request["upload"] is not None:
            name, data, frames = request["upload"]
            primer = primer_from_midi((name, data), frames_per_beat=grid, frames=frames)
        else:
            primer = load_primer(spec, dataset_key, dataset=dataset, frames_per_beat=grid)
        meter = output_meter(dataset_key, dataset=dataset if user else None, primer=primer)
        name = new_sample_name(request["seed"], request["temperature"])
        for run_dir in run_dirs:
            loaded = _load_model(str(run_dir), _model_mtime(run_dir))
            for index, (saved, data) in enumerate(sample_variations(
                loaded, steps=request["steps"], temperature=request["temperature"], seed=request["seed"],
                variations=request["variations"], primer_spec=spec, primer=primer.roll,
                max_polyphony=request["max_polyphony"], step_seconds=meter.step_seconds,
                frames_per_beat=meter.frames_per_beat, time_signature=meter.time_signature,
                program=request["program"], velocity=request["velocity"], name=name,
            )):
                shown.append({**data, "run": run_dir.name, "stem": f"{run_dir.name}-{saved.name}", "name": saved.name,
                              "init": loaded.config.init, "epoch": loaded.epoch, "checkpoint": loaded.checkpoint,
                              "variation": index + 1, "variations": request["variations"]})
    except LapMusicError as exc:
        st.session_state.sample_error = str(exc)
        return
    except Exception as exc:  # noqa: BLE001 - shown as a message, never a traceback
        log.exception("sampling failed")
        st.session_state.sample_error = f"Sampling failed ({type(exc).__name__}: {exc})."
        return
    # Side by side: variation by variation, the LAE run's left of the random run's.
    shown.sort(key=lambda item: item["variation"])
    st.session_state.sample = shown[0]
    st.session_state.sample_shown = shown


def _short_name(item: dict) -> str:
    """``LAE pre-trained``, or ``LAE pre-trained · variation 2`` among several."""
    init = INIT_NAMES.get(str(item.get("init")), str(item.get("init", "")))
    meta = item.get("meta") or {}
    return init + (f" · variation {meta.get('variation')}" if (meta.get("variations") or 1) > 1 else "")


def _title(item: dict) -> str:
    k = item.get("primer_frames") or 0
    init, _, variation = _short_name(item).partition(" · ")
    return ((f"{variation.capitalize()} · " if variation else "") + f"{init} · model of epoch {item.get('epoch', '?')}"
            + (f" · primer {k} frames" if k else ""))


def _show_fresh() -> None:
    shown = st.session_state.get("sample_shown") or []
    if not shown:
        return
    runs = len({item["run"] for item in shown})
    meta = shown[0]["meta"]
    if runs == 2:
        st.markdown(
            f"**Same seed ({meta['seed']}), primer ({meta['primer']}) and temperature ({meta['temperature']:g}), "
            "two networks** — saved in both run folders."
        )
    count = meta.get("variations") or 1
    if count > 1:
        st.markdown(f"**{count} variations** drawn together from the same start"
                    + (", each heard from both networks." if runs == 2 else "."))
    _show_items(shown, key="fresh", per_row=runs if runs > 1 else min(4, len(shown)))
    _musicality_statistics(shown)


def _show_items(items: list[dict], *, key: str, per_row: int | None = None) -> None:
    """Samples side by side, ``per_row`` to a row (default all): player with playhead over its piano roll,
    notes, downloads."""
    from ..player import show_player

    per_row = per_row or len(items)
    for start in range(0, len(items), per_row):
        row = items[start:start + per_row]
        columns = st.columns(per_row) if len(items) > 1 else [st.container()]
        for offset, (column, item) in enumerate(zip(columns, row)):
            with column:
                show_player(item["roll"], wav=item.get("wav"), step_seconds=item["step_seconds"],
                            primer_frames=item.get("primer_frames") or 0, title=_title(item))
                meta = item["meta"]
                meter = "/".join(str(v) for v in meta.get("time_signature") or (4, 4))
                tempo = f" at {meta['tempo_qpm']:g} qpm" if meta.get("tempo_qpm") else ""
                st.caption(f"Run `{item['run']}` · sample `{meta.get('name', '')}` · {meter}{tempo}")
                if item.get("silent"):
                    st.warning("This sample has no notes. Try a higher temperature or another seed.")
                if item.get("warning"):
                    st.caption(item["warning"])
                tag = f"{key}-{start + offset}" if len(items) > 1 else key
                cols = st.columns(2)
                cols[0].download_button(
                    "Download MIDI", data=item["midi"], file_name=f"{item['stem']}.mid", mime="audio/midi",
                    on_click="ignore", key=f"download_midi-{tag}" if tag != "fresh" else "download_midi",
                )
                if item.get("wav"):
                    cols[1].download_button(
                        "Download WAV", data=item["wav"], file_name=f"{item['stem']}.wav", mime="audio/wav",
                        on_click="ignore", key=f"download_wav-{tag}" if tag != "fresh" else "download_wav",
                    )


def _musicality_statistics(items: list[dict]) -> None:
    """A table of musicality statistics of the samples shown (``lapmusic/sampling/stats.py``) beside real pieces.

    ``items`` are the samples on screen, each with ``roll`` ``(T, 88)``, ``primer_frames``, ``init``, ``run``
    and ``meta`` (holding the ``dataset``); the generated frames (after the primer) are compared with excerpts
    of the same length of the dataset's training pieces.
    """
    # --- musicality statistics (lapmusic.sampling.stats; owner: nade) ---
    from lapmusic.sampling.stats import samples_table

    dataset_key = (items[0].get("meta") or {}).get("dataset")
    if not dataset_key:
        return
    with st.expander("Musicality: this sample vs real pieces"):
        try:
            rolls = {_short_name(i): i["roll"][i.get("primer_frames") or 0:] for i in items}
            rows, caption = samples_table(rolls, datasets.get_dataset(dataset_key).train)
        except Exception as exc:  # noqa: BLE001 - shown as a message, never a traceback
            st.caption(f"Statistics unavailable ({type(exc).__name__}: {exc}).")
            return
        st.dataframe(rows, hide_index=True)
        st.caption(caption + " See docs/models.md.")
    # --- end musicality statistics ---


def _saved_samples(run, partner) -> None:
    """The samples kept in the chosen run's folder; a pair (same name in the partner run) side by side."""
    from lapmusic.core.errors import LapMusicError
    from lapmusic.sampling.store import list_samples, load_sample

    saved = list_samples(run.run_dir)
    st.markdown(f"**Saved samples of this run** ({len(saved)})")
    if not saved:
        st.caption(f"None yet. Every sample you generate is kept in `{labels.display_path(run.run_dir)}/samples/`.")
        return
    options = [NO_SAVED] + [s.name for s in saved]
    titles = {s.name: s.label for s in saved}
    if st.session_state.get("saved_sample") not in options:
        st.session_state.saved_sample = NO_SAVED
    name = st.selectbox(
        "Play a saved sample again", options, key="saved_sample",
        format_func=lambda n: "choose one..." if n == NO_SAVED else titles[n],
    )
    if name == NO_SAVED:
        return
    samples = [load_sample(run.run_dir, name)]
    if partner is not None:
        try:
            samples.append(load_sample(partner.run_dir, name))
        except LapMusicError:
            pass  # no twin: the sample was made from this run alone
    samples.sort(key=lambda s: s.meta.get("init") != "lae")
    items = []
    for sample in samples:
        meta = sample.meta
        items.append({
            "roll": sample.roll(), "wav": sample.wav_bytes(), "midi": sample.midi_bytes(), "meta": meta,
            "step_seconds": float(meta.get("step_seconds") or 0.25), "primer_frames": meta.get("primer_frames") or 0,
            "run": sample.run_dir.name, "init": meta.get("init"), "epoch": meta.get("epoch"),
            "stem": f"{sample.run_dir.name}-{sample.name}", "silent": False, "warning": None,
        })
    _show_items(items, key="saved")
