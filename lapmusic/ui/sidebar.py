"""The sidebar: what to train (dataset, own MIDI upload, hidden size, init, epochs, ...) and the Train button.

Every widget constrains its range, so a setting outside it cannot be entered. The first choice is a preset
(:mod:`lapmusic.training.presets`): by default the model that sounds like music, both inits side by side on the
offline Bach set (:mod:`lapmusic.ui.defaults`).
"""

from __future__ import annotations

import logging
import re
import unicodedata
import uuid
from dataclasses import dataclass, field

import streamlit as st

from lapmusic.core.errors import LapMusicError

from . import datasets, server, session
from .defaults import app_defaults, preset_widgets
from .helptexts import REPEAT_HELP, VOCAB_HELP, WINDOW_HELP
from .labels import display_path

log = logging.getLogger(__name__)

UPLOAD = "__upload__"
LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
INIT_CHOICES = {"lae": "LAE pre-trained", "random": "random", "both": "both, side by side"}
OUTPUT_CHOICES = {"bernoulli": "independent keys (Bernoulli)", "nade": "NADE: keys of a chord agree (slower)"}
VOCAB_CHOICES = (0, 128, 256, 512, 1024)  # NADE chord vocabulary sizes offered (0 = off); 512 is the recipe's
@dataclass
class Settings:
    """What the sidebar says to train. ``dataset`` is None while an upload is not built yet."""

    dataset: str | None
    hidden: int
    init: str  # "lae", "random" or "both"
    epochs: int
    lr: float
    batch_size: int
    max_sequences: int  # 0 = every piece
    patience: int  # 0 = no early stopping
    seed: int
    device: str
    output: str = "bernoulli"  # "bernoulli" | "nade"
    nade_vocab: int = 0  # NADE only: chord vocabulary size (0 = off)
    nade_repeat: bool = False  # NADE only: the repeat-the-previous-frame component
    nade_repeat_window: int = 1  # with nade_repeat: copy from the last L frames read
    extra: dict = field(default_factory=dict)
    preset: str | None = None  # lapmusic.training.presets: its settings without a widget (dropout...) too
    max_seconds: int = 0  # start no new epoch after this many seconds of training (0 = no limit)

    def configs(self) -> list:
        """One TrainConfig per initialisation to train (two for "both").

        With both, the random run is queued first: it needs no pre-training, so its curves appear within
        seconds while the LAE run is still pre-training after it.
        """
        inits = ["random", "lae"] if self.init == "both" else [self.init]
        chords = _train_chords(self.dataset) if self.preset is not None and self.output == "nade" else None
        return [make_config(self, init, chords) for init in inits]


def _train_chords(dataset: str | None) -> int | None:
    """Distinct chords of a user dataset's training split (a preset's vocabulary is cut to fit small datasets);
    None for the built-in sets (over 1,200 chords each: the cut leaves the recipe's 512 within 3 %)."""
    if not dataset or not dataset.startswith("user:"):
        return None
    from lapmusic.data.registry import load_dataset
    from lapmusic.training.presets import distinct_chords

    return distinct_chords(load_dataset(dataset).train)


def make_config(settings: Settings, init: str, train_chords: int | None = None):
    """A ``lapmusic.training.config.TrainConfig`` for these settings (fields it does not know are left out).

    With a preset, its settings fill what the sidebar has no widget for; a widget value other than the
    preset's wins, and a preset's chord vocabulary is cut to the ``train_chords`` found
    (:func:`lapmusic.training.presets.resolve`).
    """
    from lapmusic.training.config import TrainConfig
    from lapmusic.training.presets import get_preset, resolve

    values = {
        "dataset": settings.dataset,
        "hidden": settings.hidden,
        "init": init,
        "epochs": settings.epochs,
        "lr": settings.lr,
        "batch_size": settings.batch_size,
        "seed": settings.seed,
        "device": settings.device,
        "max_sequences": settings.max_sequences or None,
        "patience": settings.patience or None,
        "max_seconds": settings.max_seconds or None,
        "output": settings.output,
        # the NADE's options only with the NADE output (hidden, and never sent, with Bernoulli)
        "nade_vocab": settings.nade_vocab if settings.output == "nade" else 0,
        "nade_repeat": settings.nade_repeat and settings.output == "nade",
        "nade_repeat_window": settings.nade_repeat_window if settings.nade_repeat and settings.output == "nade" else 1,
        **settings.extra,
    }
    known = set(TrainConfig().to_dict())
    values = {k: v for k, v in values.items() if k in known}
    if settings.preset is not None:
        preset = get_preset(settings.preset).settings
        changed = {k: v for k, v in values.items() if k not in preset or preset[k] != v}
        values = {k: v for k, v in resolve(settings.preset, changed, train_chords).items() if k in known}
    return TrainConfig.from_settings(values)


def _dataset_options() -> tuple[list[str], dict[str, str]]:
    from lapmusic.data.catalog import DATASETS
    from lapmusic.data.registry import is_available
    from lapmusic.data.user import dataset_label, user_dataset_keys

    labels: dict[str, str] = {}
    for key, info in DATASETS.items():
        note = "" if is_available(key) else " (needs a download)"
        labels[key] = f"{info.name}{note}"
    for key in user_dataset_keys(session.session_id(), everyone=False):  # shared ones and this session's own
        labels[key] = f"my MIDI: {dataset_label(key)}"
    labels[UPLOAD] = "my MIDI files (upload)..."
    return list(labels), labels


def _cuda_line() -> tuple[bool, str]:
    try:
        import torch

        if torch.cuda.is_available():
            return True, f"CUDA available: {torch.cuda.get_device_name(0)}"
    except Exception:  # noqa: BLE001 - a broken CUDA setup just means CPU
        pass
    return False, "No CUDA GPU found: training runs on the CPU."


def render() -> Settings:
    """Draw the sidebar and return its settings."""
    defaults = app_defaults()
    sidebar = st.sidebar
    sidebar.title("lapmusic")
    sidebar.caption("Pre-training RNNs on polyphonic music with linear autoencoders (Pasa & Sperduti, NIPS 2014).")

    from lapmusic.training.presets import PRESETS

    sidebar.radio(
        "Preset", list(PRESETS), key="preset", on_change=_apply_preset,
        index=list(PRESETS).index(defaults["preset"]), format_func=lambda name: PRESETS[name].title[0].upper() + PRESETS[name].title[1:],
        help="A preset sets the model and its training; Advanced settings below still change any of them. "
        + "; ".join(f"{p.name}: {p.as_options()}" for p in PRESETS.values()),
    )
    options, labels = _dataset_options()
    if st.session_state.get("dataset_choice", options[0]) not in options:
        del st.session_state["dataset_choice"]  # a dataset that is gone: back to the default
    # The default is the widget's own index: a session-state value reaches the browser once, and a late page misses it.
    default = defaults["dataset"] if defaults["dataset"] in options else options[0]
    choice = sidebar.selectbox("Dataset", options, index=options.index(default), format_func=labels.get,
                               key="dataset_choice")
    if choice == UPLOAD:
        _upload_box(sidebar)
    report = st.session_state.get("upload_report")
    if report and (choice == UPLOAD or choice == report.get("key")):
        _upload_report(sidebar, report)

    sidebar.number_input(
        "Hidden units", min_value=1, max_value=2048, value=int(defaults["hidden"]), step=8, key="hidden",
        help="Size p of the recurrent state; the LAE keeps the p strongest directions of the history.",
    )
    sidebar.radio(
        "Initialisation", list(INIT_CHOICES), format_func=INIT_CHOICES.get, key="init",
        index=list(INIT_CHOICES).index(defaults["init"]) if defaults["init"] in INIT_CHOICES else 2,
        help="LAE: weights from the linear autoencoder (the paper). Random: the usual small random weights.",
    )
    sidebar.number_input("Epochs", min_value=1, max_value=1000, value=int(defaults["epochs"]), key="epochs")
    lr_default = min(LEARNING_RATES, key=lambda v: abs(v - float(defaults["lr"])))
    sidebar.select_slider(
        "Learning rate", options=list(LEARNING_RATES), value=lr_default, key="lr", format_func=lambda v: f"{v:g}"
    )
    with sidebar.expander("Advanced settings"):
        st.number_input(
            "Batch size (pieces)", min_value=1, max_value=512, value=int(defaults["batch_size"]), key="batch_size"
        )
        st.number_input(
            "Use only the first N pieces of each split (0 = all)", min_value=0, max_value=100000,
            value=int(defaults["max_sequences"]), key="max_sequences",
            help="A quick way to make a run faster in class.",
        )
        st.number_input(
            "Stop early after N epochs without a better validation NLL (0 = never)", min_value=0,
            max_value=1000, value=int(defaults["patience"]), key="patience",
        )
        st.number_input(
            "Time budget per run: start no new epoch after this many seconds of training (0 = no limit)",
            min_value=0, max_value=86_400, value=int(defaults["max_seconds"]), key="max_seconds",
            help="Keeps the demo short on a busy machine: the best epoch so far is then tested as usual.",
        )
        st.number_input("Seed", min_value=0, max_value=2**31 - 1, value=int(defaults["seed"]), key="seed")
        st.radio(
            "Output layer", list(OUTPUT_CHOICES), format_func=OUTPUT_CHOICES.get, key="output",
            index=list(OUTPUT_CHOICES).index(defaults.get("output", "bernoulli")),
            help="Bernoulli (default, the paper's): every key of the next frame on or off independently. "
            "NADE: the keys are drawn low to high, each knowing the ones below (RNN-NADE): real chords, "
            "lower NLL, slower training.",
        )
        if st.session_state.get("output") == "nade":
            vocab_default = defaults.get("nade_vocab", 0)
            st.selectbox("Chord vocabulary (NADE)", list(VOCAB_CHOICES), key="nade_vocab",
                         index=VOCAB_CHOICES.index(vocab_default) if vocab_default in VOCAB_CHOICES else 0,
                         format_func=lambda n: "off" if n == 0 else f"{n} commonest chords", help=VOCAB_HELP)
            st.checkbox("Repeat the previous frame (NADE)", value=bool(defaults.get("nade_repeat", False)),
                        key="nade_repeat", help=REPEAT_HELP)
            if st.session_state.get("nade_repeat"):
                st.number_input("Copy window, frames (NADE repeat)", min_value=1, max_value=64,
                                value=int(defaults.get("nade_repeat_window", 1)), key="nade_repeat_window",
                                help=WINDOW_HELP)
        cuda, cuda_text = _cuda_line()
        devices = ["auto", "cpu", "cuda"] if cuda else ["auto", "cpu"]
        st.radio(
            "Device", devices, horizontal=True, key="device",
            index=devices.index(defaults["device"]) if defaults["device"] in devices else 0,
        )


    settings = current_settings()
    _train_button(sidebar, settings)
    device_note = cuda_text
    if cuda:
        device_note += " This run uses it." if settings.device in ("auto", "cuda") else " This run uses the CPU."
    sidebar.caption(device_note)
    _server_line(sidebar)
    return settings


def _apply_preset() -> None:
    """The chosen preset's values into the sidebar's widgets (the other settings follow at Train)."""
    st.session_state.update(preset_widgets(st.session_state["preset"]))


def current_settings() -> Settings:
    """The settings as the sidebar widgets hold them now (also right inside a widget callback)."""
    state = st.session_state
    choice = state.get("dataset_choice")
    dataset = None if choice in (None, UPLOAD) else choice
    return Settings(
        dataset=dataset, hidden=int(state["hidden"]), init=state["init"], epochs=int(state["epochs"]),
        lr=float(state["lr"]), batch_size=int(state["batch_size"]), max_sequences=int(state["max_sequences"]),
        patience=int(state["patience"]), seed=int(state["seed"]), device=state["device"],
        output=state.get("output", "bernoulli"), nade_vocab=int(state.get("nade_vocab", 0)),
        nade_repeat=bool(state.get("nade_repeat", False)),
        nade_repeat_window=int(state.get("nade_repeat_window", 1)), preset=state.get("preset"),
        max_seconds=int(state.get("max_seconds", 0)),
    )


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|<>~$:])")


def escape_markdown(text: str) -> str:
    """``text`` shown literally where Streamlit renders Markdown: every character that could start an
    image, link, emphasis, HTML, math or a ``:color[...]``/emoji directive gets a backslash, and control
    characters (newlines...) become spaces. File and dataset names come from users: a name such as
    ``![x](http://host/pixel.png)`` must not make the browser fetch anything."""
    text = "".join(" " if unicodedata.category(c).startswith("C") else c for c in str(text))
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _upload_box(sidebar) -> None:
    """Upload MIDI files and turn them into a dataset (selected in the Dataset box once built)."""
    from lapmusic.data.midifile import MidiLimits, megabytes
    from lapmusic.data.user import UploadLimits

    try:
        limits, upload = MidiLimits.from_env(), UploadLimits.from_env()
    except LapMusicError as exc:  # a bad LAPMUSIC_MAX_* value: say so, upload with the defaults
        sidebar.error(str(exc))
        limits, upload = MidiLimits(), UploadLimits()
    files = sidebar.file_uploader(
        "Your MIDI files", accept_multiple_files=True, key=datasets.upload_key(),
        max_upload_size=max(1, -(-limits.max_bytes // (1024 * 1024))),  # the browser refuses larger files
        help=f"At most {upload.max_files} files and {megabytes(upload.max_bytes)} in all; each file at most "
        f"{megabytes(limits.max_bytes)}, {limits.max_notes:,} notes and {limits.max_seconds / 60:g} minutes. "
        "Files that are not MIDI, corrupt, truncated, empty or over a limit are listed with the reason; the "
        "rest are used.",
    )
    sidebar.text_input("Name of this dataset", value="my songs", max_chars=40, key="upload_name")
    sidebar.checkbox("Share it with everyone on this server", key="upload_shared",
                     help="Unticked, the dataset is yours: others who choose the same name get their own.")
    sidebar.button("Build dataset from these files", on_click=datasets.build_upload, disabled=not files,
                   key="build_upload")


def _upload_report(sidebar, report: dict) -> None:
    """Which uploads were used, and every one that was not, by name (escaped), with the reason."""
    if report.get("error"):
        sidebar.error(escape_markdown(report["error"]))
    for name, reason in report.get("bad", []):
        sidebar.warning(f"{escape_markdown(name)}: {escape_markdown(reason)}")
    if report.get("key"):
        sidebar.success(f"Built {report['key']} from {report['used']} file(s).")


def _train_button(sidebar, settings: Settings) -> None:
    if settings.dataset is None:
        sidebar.info("Build a dataset from your MIDI files first, or choose another dataset.")
    sidebar.text_input(
        "Your name (optional)", max_chars=24, key="student_name",
        help="Shown in the names of the runs you start, so you find them on the Runs tab.",
    )
    sidebar.button(
        "Train", type="primary", width="stretch", key="train",
        disabled=settings.dataset is None, on_click=_start_training,
    )
    note = st.session_state.pop("train_error", None)
    if note:
        sidebar.error(note)
    shared = st.session_state.pop("train_shared", None)
    if shared:
        sidebar.success(shared)


def _start_training() -> None:
    """Queue the sidebar's settings (one run per initialisation), or follow identical runs that exist."""
    try:
        configs = current_settings().configs()
        for config in configs:
            config.validate()  # bad settings are refused here, before anything is queued
        manager = server.manager()
        me, client = session.session_id(), session.client_ip()
        group = uuid.uuid4().hex[:8]
        student = st.session_state.get("student_name") or None
        submitted = manager.submit_group([c.to_dict() for c in configs], session=me, client=client, group=group,
                                         student=student)
    except LapMusicError as exc:
        st.session_state.train_error = str(exc)
        return
    except Exception as exc:  # noqa: BLE001 - never a traceback in the page
        log.exception("could not start training")
        st.session_state.train_error = f"Could not start the training ({type(exc).__name__}: {exc})."
        return
    followed = [job for job in submitted if job.creator != me]
    if followed:
        st.session_state.train_shared = (
            f"{len(followed)} of these runs already exist with exactly these settings: you follow them "
            "instead of training them again (no waiting for a slot, no run spent)."
        )
    session.set_focus([job.run_dir for job in submitted])
    session.go_to("Training")


def _server_line(sidebar) -> None:
    manager = server.manager()
    running, queued = manager.running_count, manager.queued_count
    where = f"Runs are saved in `{display_path(manager.runs_dir)}`."
    if not manager.owner:
        sidebar.caption("Server: another lapmusic server trains the runs of this folder; this one only shows them. "
                        + where)
        return
    sidebar.caption(
        f"Server: {running} training, {queued} waiting ({manager.max_jobs} at a time, each in its own process). "
        + where
    )
