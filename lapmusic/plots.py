"""Plotly figures: a piano roll, the LAE's singular value spectrum, training curves.

Pure plotly (no Streamlit), so the app, notebooks and scripts share them; ``fig.write_html(...)`` or
``fig.write_image(...)`` (with kaleido) saves one.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lapmusic import HIGHEST_PITCH, LOWEST_PITCH, N_KEYS

PRIMER_COLOUR = "#7f7f7f"  # grey: what the model was given
GENERATED_COLOUR = "#1f77b4"  # blue: what the model made up
RUN_COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")

MAX_NOTE_BARS = 20000
"""Above this many notes the roll is drawn as one heatmap image instead of one bar per note."""

_BLACK_KEYS = {1, 3, 6, 8, 10}  # pitch classes C#, D#, F#, G#, A#
_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def note_name(pitch: int) -> str:
    """MIDI pitch -> scientific pitch name: 60 -> ``C4``, 61 -> ``C#4``, 21 -> ``A0``."""
    return f"{_NAMES[pitch % 12]}{pitch // 12 - 1}"


# --------------------------------------------------------------------------------------- piano roll
def piano_roll_figure(
    roll: np.ndarray,
    *,
    primer_frames: int = 0,
    step_seconds: float | None = None,
    title: str | None = None,
) -> go.Figure:
    """A piano roll: time across, pitch up (note names on the axis), primer grey and generated blue.

    Held notes are merged into one bar each (a horizontal bar chart, one trace per part), so the figure
    stays light for long rolls; past :data:`MAX_NOTE_BARS` notes it switches to a single heatmap.

    Parameters
    ----------
    roll : array-like of shape (T, 88)
        0/1 piano roll; column ``k`` is MIDI pitch ``21 + k``.
    primer_frames : int, default=0
        The first ``primer_frames`` frames are the primer, drawn in grey with a dashed line where the
        generated part starts (clipped to ``0..T``).
    step_seconds : float, optional
        Seconds per frame; time is shown in seconds when given, else in frames.
    title : str, optional
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure

    Raises
    ------
    lapmusic.core.errors.DataError
        ``roll`` is not a 0/1 ``(T, 88)`` array.
    """
    from lapmusic.data.roll import check_roll, roll_to_notes

    roll = check_roll(roll, "piano roll")
    frames = roll.shape[0]
    primer_frames = int(np.clip(primer_frames, 0, frames))
    scale = float(step_seconds) if step_seconds else 1.0
    unit = "s" if step_seconds else "frame"

    fig = go.Figure()
    # A primer note held into the generated part is cut at the boundary, like the MIDI's two tracks.
    parts = [("primer", roll[:primer_frames], 0, PRIMER_COLOUR), ("generated", roll[primer_frames:], primer_frames,
                                                                  GENERATED_COLOUR)]
    parts = [part for part in parts if part[1].shape[0] > 0]
    notes_per_part = [roll_to_notes(part_roll) for _, part_roll, _, _ in parts]
    n_notes = sum(len(notes) for notes in notes_per_part)
    label_generated = primer_frames > 0

    if n_notes > MAX_NOTE_BARS:
        _add_roll_heatmap(fig, roll, primer_frames, scale)
    else:
        for (name, _, offset, colour), notes in zip(parts, notes_per_part):
            if not notes:
                continue
            pitches = np.array([n[0] for n in notes])
            starts = (np.array([n[1] for n in notes]) + offset) * scale
            durations = (np.array([n[2] for n in notes]) - np.array([n[1] for n in notes])) * scale
            names = [note_name(p) for p in pitches]
            fig.add_trace(
                go.Bar(
                    name=name if label_generated or name == "primer" else "notes",
                    orientation="h",
                    y=pitches,
                    x=durations,
                    base=starts,
                    width=0.85,
                    marker=dict(color=colour, line=dict(width=0)),
                    customdata=np.column_stack([names, starts, starts + durations]),
                    hovertemplate=f"%{{customdata[0]}} (MIDI %{{y}})<br>%{{customdata[1]:.3g}}–%{{customdata[2]:.3g}} {unit}"
                    f"<extra>{name}</extra>",
                )
            )

    used = np.flatnonzero(roll.any(axis=0))
    if used.size:
        low, high = LOWEST_PITCH + used.min() - 3, LOWEST_PITCH + used.max() + 3
    else:
        low, high = 48, 84  # an empty roll: show three octaves around middle C
    low, high = max(low, LOWEST_PITCH - 1), min(high, HIGHEST_PITCH + 1)
    tick_pitches = [p for p in range(LOWEST_PITCH, HIGHEST_PITCH + 1) if p % 12 == 0 or (high - low <= 30)]
    fig.update_yaxes(
        title_text="pitch",
        range=[low - 0.5, high + 0.5],
        tickmode="array",
        tickvals=tick_pitches,
        ticktext=[note_name(p) for p in tick_pitches],
        showgrid=True,
        gridcolor="rgba(0,0,0,0.08)",
        zeroline=False,
    )
    fig.update_xaxes(title_text="time (s)" if step_seconds else "time (frames)", range=[0, max(frames, 1) * scale],
                     zeroline=False)
    # Shade the black keys' rows as on a keyboard; plain dicts in one update, as add_hrect per row is slow.
    shapes = [
        dict(type="rect", xref="paper", x0=0, x1=1, y0=pitch - 0.5, y1=pitch + 0.5, fillcolor="rgba(0,0,0,0.045)",
             line=dict(width=0), layer="below")
        for pitch in range(int(math.ceil(low)), int(high) + 1)
        if pitch % 12 in _BLACK_KEYS
    ]
    if 0 < primer_frames < frames:
        shapes.append(dict(type="line", xref="x", yref="paper", x0=primer_frames * scale, x1=primer_frames * scale,
                           y0=0, y1=1, line=dict(color="black", width=1, dash="dash")))
        fig.add_annotation(x=primer_frames * scale, y=1.0, yref="paper", text="primer | generated", showarrow=False,
                           xanchor="center", yanchor="bottom", font=dict(size=11))
    fig.update_layout(
        shapes=shapes,
        title=title,
        barmode="overlay",  # bars of both parts share the pitch rows; never side by side
        bargap=0,
        plot_bgcolor="white",
        showlegend=label_generated,
        legend=dict(orientation="h", yanchor="bottom", y=1.06, xanchor="right", x=1),
        margin=dict(l=60, r=20, t=60 if title or label_generated else 30, b=50),
        height=420,
    )
    return fig


def _add_roll_heatmap(fig: go.Figure, roll: np.ndarray, primer_frames: int, scale: float) -> None:
    """One image for very dense rolls: 1 = primer note, 2 = generated note, 0 = silence."""
    z = roll.T.astype(np.int8) * 2
    z[:, :primer_frames] //= 2
    fig.add_trace(
        go.Heatmap(
            z=z,
            x0=0.5 * scale,
            dx=scale,
            y=np.arange(LOWEST_PITCH, LOWEST_PITCH + N_KEYS),
            zmin=0,
            zmax=2,
            colorscale=[[0, "white"], [0.33, "white"], [0.33, PRIMER_COLOUR], [0.67, PRIMER_COLOUR],
                        [0.67, GENERATED_COLOUR], [1, GENERATED_COLOUR]],
            showscale=False,
            hovertemplate="MIDI %{y}<br>t = %{x:.3g}<extra></extra>",
        )
    )


# --------------------------------------------------------------------------------------- spectrum
def spectrum_figure(singular_values: Sequence[float], p: int, *, energy=None) -> go.Figure:
    """Singular values of the LAE's data matrix (log scale) and the cumulative energy they explain.

    Parameters
    ----------
    singular_values : array-like of shape (k,)
        In descending order (zeros are left off the log axis).
    p : int
        The number of hidden units kept; marked with a vertical line and the energy it captures.
    energy : None, float or array-like of shape (k,), optional
        How energy becomes a fraction. None: of the values shown (right when all of them are given, as
        the exact solver does). A number: of the data's total energy ``||Xi||_F^2``
        (``LinearAutoencoder.total_energy``, right for the approximate solver, which keeps only the top
        values). An array: each component's fraction (``LinearAutoencoder.energy_per_component``).

    Returns
    -------
    plotly.graph_objects.Figure

    Raises
    ------
    ValueError
        ``energy`` is an array whose length differs from ``singular_values``'.
    """
    values = np.asarray(singular_values, dtype=np.float64).ravel()
    k = values.size
    if energy is None:
        total = float(np.sum(values**2))
        fractions = values**2 / total if total > 0 else np.zeros_like(values)
    elif np.ndim(energy) == 0:
        total = float(energy)
        fractions = values**2 / total if total > 0 else np.zeros_like(values)
    else:
        fractions = np.asarray(energy, dtype=np.float64).ravel()
        if fractions.size != k:
            raise ValueError(f"energy has {fractions.size} entries but there are {k} singular values")
    cumulative = np.cumsum(fractions)
    index = np.arange(1, k + 1)

    fig = make_subplots(specs=[[{"secondary_y": True}]])
    positive = values > 0  # a log axis cannot show zeros (rank-deficient data)
    fig.add_trace(
        go.Scatter(x=index[positive], y=values[positive], mode="lines+markers" if k <= 200 else "lines",
                   name="importance of each pattern (singular value)", line=dict(color="#1f77b4"), marker=dict(size=4),
                   hovertemplate="σ<sub>%{x}</sub> = %{y:.4g}<extra></extra>"),
        secondary_y=False,
    )
    fig.add_trace(
        go.Scatter(x=index, y=100 * cumulative, mode="lines", name="share of the recent past kept (cumulative energy)",
                   line=dict(color="#ff7f0e"),
                   hovertemplate="first %{x} components: %{y:.1f}% of the energy<extra></extra>"),
        secondary_y=True,
    )
    if k and 1 <= p:
        marked = min(int(p), k)
        captured = 100 * cumulative[marked - 1]
        fig.add_vline(x=marked, line=dict(color="black", width=1, dash="dash"))
        fig.add_annotation(x=marked, y=1.0, yref="paper", yanchor="bottom", showarrow=False,
                           text=f"p = {int(p)}: {captured:.1f}% of the energy")
    fig.update_xaxes(title_text="pattern (component), most important first", range=[0.5, max(k, 1) + 0.5])
    fig.update_yaxes(title_text="importance (singular value, log)", type="log", secondary_y=False)
    fig.update_yaxes(title_text="share kept (cumulative energy, %)", range=[0, 101], tickmode="linear", tick0=0, dtick=20,
                     secondary_y=True, showgrid=False)
    fig.update_layout(height=380, margin=dict(l=60, r=60, t=50, b=50),
                      legend=dict(orientation="h", yanchor="bottom", y=1.08, xanchor="right", x=1))
    return fig


# --------------------------------------------------------------------------------------- training curves
BASELINE_COLOUR = "#7f7f7f"


def loss_figure(histories: Mapping[str, Sequence[Mapping]], *, baselines: Mapping | None = None) -> go.Figure:
    """Training curves of several runs on shared axes, readable for both initialisations.

    Top panel: NLL per frame (validation solid, training dotted); bottom panel: validation accuracy. One
    colour per run. Missing or non-finite values leave a gap instead of failing.

    The NLL axis is clipped (:func:`nll_axis_range`): a random start's epoch-0 NLL can be several times
    every later point's, and the full range would flatten every curve. Points above the axis keep their
    line (it leaves the plot upwards) and get a label with their value at the top.

    Parameters
    ----------
    histories : mapping of str to sequence of mapping
        A run label (e.g. ``"LAE"``, ``"random"``) to its epoch records (``metrics.jsonl`` lines:
        ``epoch``, ``train_nll``, ``valid_nll``, ``valid_acc``; epoch 0 is the network before training).
    baselines : mapping, optional
        ``{"marginal_nll": float, "copy_previous_acc": float}`` (:func:`lapmusic.model.metrics.baselines`
        on the same split), drawn as grey dashed lines: what a network must beat.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.6, 0.4],
                        subplot_titles=("negative log-likelihood per frame (lower is better)",
                                        "validation accuracy (higher is better)"))
    nll_points: list[tuple[str, float, float]] = []  # (label, epoch, value) of every NLL point drawn
    accs: list[float] = []
    last_epoch = 0.0
    for i, (label, records) in enumerate(histories.items()):
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        records = list(records or [])
        epochs = [_number(r.get("epoch"), default=j + 1) for j, r in enumerate(records)]
        for key, row, dash, suffix, show in (
            ("valid_nll", 1, "solid", "valid", True),
            ("train_nll", 1, "dot", "train", True),
            ("valid_acc", 2, "solid", "valid ACC", False),
        ):
            ys = [_number(r.get(key)) for r in records]
            if not any(y is not None for y in ys):
                continue
            finite = [(x, y) for x, y in zip(epochs, ys) if y is not None]
            last_epoch = max(last_epoch, max(x for x, _ in finite))
            if row == 1:
                nll_points.extend((label, x, y) for x, y in finite)
            else:
                accs.extend(y for _, y in finite)
            fig.add_trace(
                go.Scatter(x=epochs, y=ys, mode="lines+markers", name=f"{label} {suffix}",
                           legendgroup=label, showlegend=show,
                           line=dict(color=colour, dash=dash), marker=dict(size=5),
                           hovertemplate=f"{label} {suffix}<br>epoch %{{x}}: %{{y:.4f}}<extra></extra>"),
                row=row, col=1,
            )
    baselines = baselines or {}
    marginal = _number(baselines.get("marginal_nll"))
    copy_acc = _number(baselines.get("copy_previous_acc"))
    if nll_points:
        low, high = nll_axis_range([(x, y) for _, x, y in nll_points], extra=[marginal] if marginal else ())
        fig.update_yaxes(range=[low, high], row=1, col=1)
        clipped: dict[tuple[str, float], float] = {}
        for label, x, y in nll_points:
            if y > high:
                clipped[(label, x)] = max(y, clipped.get((label, x), y))
        colours = {label: RUN_COLOURS[i % len(RUN_COLOURS)] for i, label in enumerate(histories)}
        # Short, in the run's colour, inside the plot below its top edge and one under the other: a label with
        # the run's name ran into the panel's title and the baseline's label.
        for n, ((label, x), y) in enumerate(sorted(clipped.items(), key=lambda item: item[0][1])):
            fig.add_annotation(x=x, y=high, xref="x", yref="y", text=f"{y:.1f} \u2191", showarrow=False,
                               yanchor="top", xanchor="left", xshift=4, yshift=-2 - 15 * n,
                               font=dict(size=11, color=colours[label]), bgcolor="rgba(255,255,255,0.85)",
                               hovertext=f"{label} at epoch {x:g}: {y:.4f} (above the axis)")
    if accs or copy_acc is not None:
        top = max(accs + ([copy_acc] if copy_acc is not None else []) + [10.0])
        fig.update_yaxes(range=[0, top * 1.12], row=2, col=1)
    for value, row, text in ((marginal, 1, "key frequencies"), (copy_acc, 2, "repeat last frame")):
        if value is None:
            continue
        fig.add_hline(y=value, line=dict(color=BASELINE_COLOUR, width=1, dash="dash"), row=row, col=1,
                      annotation_text=f"baseline: {text} ({value:.3g})", annotation_position="bottom right",
                      annotation_font=dict(size=10, color=BASELINE_COLOUR))
    fig.update_xaxes(range=[-0.4, max(last_epoch, 1.0) + 0.4], rangemode="tozero")
    fig.update_yaxes(title_text="NLL", row=1, col=1)
    fig.update_yaxes(title_text="ACC (%)", row=2, col=1)
    fig.update_xaxes(title_text="epoch (0 = before training)", row=2, col=1)
    fig.update_layout(height=520, margin=dict(l=60, r=20, t=70, b=50), hovermode="x unified")
    return fig


def nll_axis_range(points: Sequence[tuple[float, float]], *, extra: Sequence[float] = (),
                   min_span: float = 1.0) -> tuple[float, float]:
    """The NLL axis range for ``points``, clipping outlying starts.

    The *core* is every point after epoch 0 (or, before any epoch is done, the lowest epoch-0 value) plus
    ``extra``. With ``lo`` the lowest value overall and ``hi`` the core's highest, a point is shown when it
    is at most ``hi + max(hi - lo, min_span)``: e.g. a start at 9.9 stays in view next to curves between 9
    and 12, a start at 61 is clipped. The range spans at least ``min_span`` nats (a lone point would
    otherwise be drawn on an axis a few hundredths wide) and is padded by 5 %.

    Parameters
    ----------
    points : sequence of (float, float)
        ``(epoch, nll)`` pairs; None or non-finite values are ignored.
    extra : sequence of float, default=()
        Values to keep in view, e.g. a baseline.
    min_span : float, default=1.0
        The narrowest range, in nats.

    Returns
    -------
    (float, float)
        ``(low, high)``; ``(0.0, 1.0)`` when there is nothing to show.
    """
    values = [(float(x), float(y)) for x, y in points if y is not None and math.isfinite(float(y))]
    extra = [float(v) for v in extra if v is not None and math.isfinite(float(v))]
    if not values and not extra:
        return (0.0, 1.0)
    later = [y for x, y in values if x > 0]
    starts = [y for x, y in values if x <= 0]
    core = (later or ([min(starts)] if starts else [])) + extra
    lo = min([y for _, y in values] + extra)
    hi = max(core)
    limit = hi + max(hi - lo, min_span)
    shown = [y for _, y in values if y <= limit] + extra
    low, high = min(shown), max(shown)
    if high - low < min_span:
        middle = (high + low) / 2
        low, high = middle - min_span / 2, middle + min_span / 2
    pad = 0.05 * (high - low)
    return (low - pad, high + pad)


def _number(value, default=None):
    """A finite float, or ``default`` (``None`` leaves a gap in a line)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default
