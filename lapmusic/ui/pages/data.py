"""Data tab: facts about the chosen dataset, a piano roll of one piece, and (on request) how it sounds."""

from __future__ import annotations

import streamlit as st

from lapmusic.data.cache import dataset_token

from .. import datasets
from ..sidebar import Settings, escape_markdown

MAX_LISTEN_FRAMES = 256  # a piece's first frames are enough to hear it; keeps rendering quick
MAX_PLOT_FRAMES = 4096  # longer pieces (a user's MIDI may have up to 20,000 frames) are drawn in part


@st.cache_data(show_spinner=False, max_entries=64)
def _piece_audio(token: str, split: str, index: int, step_seconds: float, _roll) -> tuple[bytes, str | None]:
    from lapmusic.data.midi import roll_to_midi
    from lapmusic.sampling.audio import render_wav

    roll = _roll[:MAX_LISTEN_FRAMES]
    result = render_wav(roll_to_midi(roll, step_seconds=step_seconds), min_seconds=len(roll) * step_seconds)
    return result.wav, result.warning


def render(settings: Settings) -> None:
    st.subheader("The data")
    if settings.dataset is None:
        st.info("Upload your MIDI files in the sidebar and build a dataset, or choose one of the datasets.")
        return
    from lapmusic.data.catalog import DATASETS

    dataset = datasets.get_dataset(settings.dataset)
    info = DATASETS.get(settings.dataset)
    # A user dataset's name is chosen by whoever uploaded it: shown literally, never as Markdown.
    st.markdown(f"**{escape_markdown(dataset.name)}**" + (f" — {info.description}" if info else ""))
    facts = dataset.summary()
    sizes, frames = facts["split_sizes"], facts["frames"]
    cols = st.columns(4)
    cols[0].metric("Pieces (train / valid / test)", f"{sizes['train']} / {sizes['valid']} / {sizes['test']}",
                   help="The network learns from the train pieces, is checked on the valid pieces while it "
                        "learns, and is scored at the end on the test pieces, which it never sees before.")
    cols[1].metric("Frames (all splits)", f"{sum(frames.values()):,}",
                   help="A frame is one moment of a piece: which of the 88 keys sound at that time.")
    cols[2].metric("Notes per frame", f"{facts['notes_per_frame']:.2f}",
                   help="How many keys sound at once, on average: about 4 in a four-part chorale.")
    cols[3].metric("One frame lasts", f"{dataset.step_seconds:g} s", help="The time between two frames.")
    st.caption(
        "A piece is a piano roll: one row per time step (frame), one column per piano key (88 keys, A0 to C8), "
        "1 where the key sounds. The network learns to predict each frame from the ones before it. The pieces "
        "are split three ways: **train** (it learns from them), **valid** (checked while it learns) and "
        "**test** (scored at the end, never seen before)."
    )

    splits = [s for s in ("train", "valid", "test") if sizes[s] > 0]
    left, right = st.columns([1, 2])
    split = left.radio("Split", splits, horizontal=True, key="data_split")
    pieces = dataset.split(split)
    # One key per dataset and split: a piece number valid in one may be out of range in another.
    index = right.number_input(
        f"Piece (0 to {len(pieces) - 1})", min_value=0, max_value=len(pieces) - 1, value=0,
        key=f"data_piece-{settings.dataset}-{split}",
    )
    roll = pieces[int(index)]
    from lapmusic.plots import piano_roll_figure

    figure = piano_roll_figure(
        roll[:MAX_PLOT_FRAMES], primer_frames=0, step_seconds=dataset.step_seconds,
        title=f"{split} piece {int(index)}: {len(roll)} frames, {len(roll) * dataset.step_seconds:.0f} s",
    )
    st.plotly_chart(figure, key="data_roll")
    if len(roll) > MAX_PLOT_FRAMES:
        st.caption(f"Piano roll: the first {MAX_PLOT_FRAMES:,} of {len(roll):,} frames.")
    # Audio on request: a WAV of megabytes in every new page slows a class's first page loads.
    # The roll stays a Plotly chart: this first view loads Plotly, which the Training tab's curves need anyway.
    piece = (settings.dataset, split, int(index))
    if st.session_state.get("data_listen") != piece:
        st.button("Listen", key="data_listen_button", icon=":material/play_arrow:",
                  on_click=lambda: st.session_state.update(data_listen=piece, data_autoplay=piece),
                  help=f"Play the first {MAX_LISTEN_FRAMES} frames of this piece.")
        return
    wav, warning = _piece_audio(
        dataset_token(settings.dataset), split, int(index), dataset.step_seconds, roll
    )
    # Autoplay only in the run right after the press: coming back to this tab (Streamlit forgets that the
    # player already autoplayed once it left the page) or any later rerun shows the player without playing
    # the piece again. Turning autoplay off under a playing player does not stop it.
    autoplay = st.session_state.pop("data_autoplay", None) == piece
    st.audio(wav, format="audio/wav", autoplay=autoplay)
    if len(roll) > MAX_LISTEN_FRAMES:
        st.caption(f"Audio: the first {MAX_LISTEN_FRAMES} frames.")
    if warning:
        st.caption(warning)
