"""Plotly figures: the piano roll draws exactly the roll's notes; spectrum and loss curves hold the data."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

import lapmusic.plots as plots
from lapmusic.plots import loss_figure, note_name, piano_roll_figure, spectrum_figure


def random_roll(frames=64, density=0.08, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((frames, 88)) < density).astype(np.uint8)


def roll_from_bars(fig, frames, step=1.0):
    """Paint every bar of the figure back onto a roll, by trace name."""
    rolls = {}
    for trace in fig.data:
        assert isinstance(trace, go.Bar) and trace.orientation == "h"
        roll = rolls.setdefault(trace.name, np.zeros((frames, 88), dtype=np.uint8))
        for pitch, start, duration in zip(trace.y, trace.base, trace.x):
            a, b = int(round(start / step)), int(round((start + duration) / step))
            assert b > a
            assert not roll[a:b, pitch - 21].any()  # notes of one key never overlap
            roll[a:b, pitch - 21] = 1
    return rolls


def test_note_names():
    assert [note_name(p) for p in (21, 60, 61, 69, 108)] == ["A0", "C4", "C#4", "A4", "C8"]


def test_piano_roll_bars_are_exactly_the_roll_split_at_the_primer():
    roll = random_roll(80)
    fig = piano_roll_figure(roll, primer_frames=30, step_seconds=0.25, title="demo")
    rolls = roll_from_bars(fig, 80, step=0.25)
    assert set(rolls) == {"primer", "generated"}
    assert np.array_equal(rolls["primer"][:30], roll[:30]) and not rolls["primer"][30:].any()
    assert np.array_equal(rolls["generated"][30:], roll[30:]) and not rolls["generated"][:30].any()
    colours = {trace.name: trace.marker.color for trace in fig.data}
    assert colours["primer"] == plots.PRIMER_COLOUR != colours["generated"] == plots.GENERATED_COLOUR
    assert fig.layout.barmode == "overlay"
    assert fig.layout.title.text == "demo"
    assert fig.layout.xaxis.title.text == "time (s)" and fig.layout.xaxis.range == (0, 20.0)
    assert any(shape.x0 == 7.5 for shape in fig.layout.shapes)  # the primer | generated line


def test_held_notes_are_merged_into_one_bar():
    roll = np.zeros((10, 88), dtype=np.uint8)
    roll[2:9, 60 - 21] = 1
    roll[0:1, 64 - 21] = 1
    fig = piano_roll_figure(roll)
    (trace,) = fig.data
    assert sorted(zip(trace.y, trace.base, trace.x)) == [(60, 2.0, 7.0), (64, 0.0, 1.0)]
    assert fig.layout.xaxis.title.text == "time (frames)"
    assert not fig.layout.showlegend


def test_pitch_axis_shows_note_names():
    roll = np.zeros((4, 88), dtype=np.uint8)
    roll[:, [0, 87]] = 1  # the whole keyboard: labels at every C
    axis = piano_roll_figure(roll).layout.yaxis
    labels = dict(zip(axis.tickvals, axis.ticktext))
    assert labels[60] == "C4" and labels[24] == "C1" and labels[108] == "C8" and len(labels) == 8
    narrow = np.zeros((4, 88), dtype=np.uint8)
    narrow[:, 60 - 21] = 1  # a small range: every pitch is named
    axis = piano_roll_figure(narrow).layout.yaxis
    assert axis.range[0] < 60 < axis.range[1]
    assert "B3" in axis.ticktext and "C#4" in axis.ticktext


def test_black_key_rows_are_shaded():
    roll = np.zeros((4, 88), dtype=np.uint8)
    roll[:, [60 - 21, 72 - 21]] = 1  # C4 and C5: the axis spans A3 (57) .. D#5 (75)
    fig = piano_roll_figure(roll)
    shaded = sorted(int(shape.y0 + 0.5) for shape in fig.layout.shapes if shape.type == "rect")
    assert shaded == [58, 61, 63, 66, 68, 70, 73, 75]  # A#3 C#4 D#4 F#4 G#4 A#4 C#5 D#5


def test_long_roll_stays_two_traces():
    roll = random_roll(2500, density=0.04)
    fig = piano_roll_figure(roll, primer_frames=100)
    assert len(fig.data) == 2  # one trace per part, not one per frame or note
    assert sum(len(trace.y) for trace in fig.data) == int(
        sum(np.count_nonzero(np.diff(np.r_[0, part[:, k], 0]) == 1)
            for part in (roll[:100], roll[100:]) for k in range(88))
    )


def test_very_dense_roll_switches_to_heatmap(monkeypatch):
    monkeypatch.setattr(plots, "MAX_NOTE_BARS", 10)
    roll = random_roll(40, density=0.3)
    fig = piano_roll_figure(roll, primer_frames=10, step_seconds=0.5)
    (trace,) = fig.data
    assert isinstance(trace, go.Heatmap)
    z = np.asarray(trace.z)
    assert z.shape == (88, 40)
    assert np.array_equal(z[:, :10], roll[:10].T) and np.array_equal(z[:, 10:], 2 * roll[10:].T)


def test_empty_roll_and_bad_roll():
    fig = piano_roll_figure(np.zeros((16, 88), dtype=np.uint8))
    assert len(fig.data) == 0 and fig.layout.xaxis.range == (0, 16)
    with pytest.raises(Exception, match="88"):
        piano_roll_figure(np.zeros((4, 87)))


# --------------------------------------------------------------------------------------- spectrum
def test_spectrum_cumulative_energy_and_marker():
    values = np.array([4.0, 2.0, 1.0, 1.0, 0.0])
    fig = spectrum_figure(values, 2)
    sv, cumulative = fig.data
    assert fig.layout.yaxis.type == "log"
    assert list(sv.y) == [4.0, 2.0, 1.0, 1.0]  # the zero cannot sit on a log axis
    np.testing.assert_allclose(cumulative.y, [100 * 16 / 22, 100 * 20 / 22, 100 * 21 / 22, 100, 100])
    assert cumulative.yaxis == "y2"
    assert "p = 2: 90.9%" in fig.layout.annotations[0].text
    assert fig.layout.shapes[0].x0 == 2


def test_spectrum_with_total_energy_or_fractions():
    values = np.array([3.0, 1.0])
    by_total = spectrum_figure(values, 1, energy=20.0)  # top values of a larger spectrum
    np.testing.assert_allclose(by_total.data[1].y, [45.0, 50.0])
    by_fraction = spectrum_figure(values, 2, energy=np.array([0.45, 0.05]))
    np.testing.assert_allclose(by_fraction.data[1].y, [45.0, 50.0])
    assert "50.0%" in by_fraction.layout.annotations[0].text
    with pytest.raises(ValueError, match="entries"):
        spectrum_figure(values, 1, energy=np.ones(3))


# --------------------------------------------------------------------------------------- loss curves
def test_loss_figure_two_runs_two_panels():
    lae = [dict(epoch=e, train_nll=8 - e, valid_nll=8.5 - e, valid_acc=0.1 * e) for e in (1, 2, 3)]
    rnd = [dict(epoch=e, train_nll=9 - e, valid_nll=float("nan") if e == 2 else 9.5 - e, valid_acc=0.05 * e)
           for e in (1, 2, 3)]
    fig = loss_figure({"LAE": lae, "random": rnd})
    traces = {trace.name: trace for trace in fig.data}
    assert set(traces) == {f"{run} {what}" for run in ("LAE", "random") for what in ("valid", "train", "valid ACC")}
    assert list(traces["LAE valid"].y) == [7.5, 6.5, 5.5] and list(traces["LAE valid"].x) == [1, 2, 3]
    assert list(traces["random valid"].y) == [8.5, None, 6.5]  # NaN leaves a gap
    assert traces["LAE valid ACC"].yaxis == "y2" and traces["LAE valid"].yaxis == "y"
    assert traces["LAE valid"].line.color == traces["LAE valid ACC"].line.color != traces["random valid"].line.color
    assert traces["LAE train"].line.dash == "dot"


def test_loss_figure_tolerates_missing_fields_and_empty_runs():
    fig = loss_figure({"only valid": [{"epoch": 1, "valid_nll": 3.0}], "empty": []})
    assert [trace.name for trace in fig.data] == ["only valid valid"]
    assert len(loss_figure({}).data) == 0


def _bach_like_histories():
    """Shaped like the default demo: LAE starts near 9.9, random at 60.9, both between 9 and 13 afterwards."""
    lae = [dict(epoch=e, train_nll=9.6 - 0.1 * e, valid_nll=9.9 - 0.05 * e, valid_acc=13 + e) for e in range(6)]
    rnd = [dict(epoch=0, train_nll=60.8, valid_nll=60.9, valid_acc=0.0)]
    rnd += [dict(epoch=e, train_nll=13 - 0.2 * e, valid_nll=12.6 - 0.1 * e, valid_acc=float(e)) for e in range(1, 6)]
    return lae, rnd


def test_loss_axis_clips_the_random_start_but_keeps_every_other_point_in_view():
    from lapmusic.plots import nll_axis_range

    lae, rnd = _bach_like_histories()
    fig = loss_figure({"LAE": lae, "random": rnd}, baselines={"marginal_nll": 11.7, "copy_previous_acc": 23.2})
    low, high = fig.layout.yaxis.range
    drawn = [y for t in fig.data if t.yaxis == "y" for y in t.y if y is not None]
    shown = [y for y in drawn if y <= high]
    assert sorted(set(drawn) - set(shown)) == [60.8, 60.9]  # only the random start is above the axis
    assert low <= min(drawn) and high < 20 and 11.7 < high  # the baseline stays in view
    # The LAE curve fills a readable part of the axis (it was 1 % of an axis running to 61).
    lae_valid = [t for t in fig.data if t.name == "LAE valid"][0].y
    assert (max(lae_valid) - min(lae_valid)) / (high - low) > 0.05
    notes = [a.text for a in fig.layout.annotations if "\u2191" in (a.text or "")]
    assert notes == ["60.9 \u2191"]  # the clipped points are labelled with their value, in their run's colour
    assert fig.layout.xaxis.range[0] < 0  # epoch 0 is shown
    assert fig.layout.yaxis2.range[1] > 23.2  # the ACC baseline is in view
    assert any("repeat last frame" in (a.text or "") for a in fig.layout.annotations)

    # Before any epoch is done: the lone random start is not drawn on an axis a few hundredths wide.
    assert nll_axis_range([(0, 60.88)])[1] - nll_axis_range([(0, 60.88)])[0] >= 1.0
    # Only epoch 0 of both: the LAE start is in view, the random one clipped.
    low, high = nll_axis_range([(0, 9.9), (0, 9.6), (0, 60.9), (0, 60.8)])
    assert low < 9.6 and 9.9 < high < 60.8
    # A random run alone: its own later epochs set the axis.
    low, high = nll_axis_range([(e, r["valid_nll"]) for e, r in enumerate(rnd)])
    assert high < 60 and low < 12.1
    # Nothing to clip: every point is in view.
    low, high = nll_axis_range([(0, 10.0), (1, 9.0), (2, 8.5)])
    assert low < 8.5 and high > 10.0
    assert nll_axis_range([]) == (0.0, 1.0)
