"""Words a class can read: a plain sentence next to every number (Pre-training, Results, Training, Runs, Data),
no promised duration (an estimate from the runs measured instead), durations said as ranges, and the loss
chart's off-scale label clear of its title."""

from __future__ import annotations

import pytest
from appkit import all_texts, app_environment, new_app, no_exceptions, pair_on_disk, show

from lapmusic.plots import loss_figure
from lapmusic.ui.labels import format_range


@pytest.fixture(scope="module")
def app_env(tmp_path_factory):
    yield from app_environment(tmp_path_factory)


@pytest.mark.parametrize("low, high, said", [
    (20, 40, "20 to 40 s"),
    (40, 130, "40 s to 2 min"),
    (180, 300, "3 to 5 min"),
    (100, 110, "2 min"),
    (3000, 4800, "50 min to 1 h 20 min"),
    (300, 180, "3 to 5 min"),  # ends given the wrong way round
])
def test_durations_are_said_as_a_range(low, high, said):
    assert format_range(low, high) == said


def test_an_off_scale_start_is_labelled_inside_the_plot_in_its_runs_colour():
    history = [{"epoch": 0, "valid_nll": 60.9, "train_nll": 61.0, "valid_acc": 1.0},
               {"epoch": 1, "valid_nll": 10.1, "train_nll": 11.0, "valid_acc": 8.0},
               {"epoch": 2, "valid_nll": 9.3, "train_nll": 9.4, "valid_acc": 11.0}]
    other = [dict(row, valid_nll=row["valid_nll"] - 1, train_nll=row["train_nll"] - 1) for row in history]
    fig = loss_figure({"random": history, "random again": other})
    notes = [a for a in fig.layout.annotations if "\u2191" in (a.text or "")]
    assert [a.text for a in notes] == ["61.0 \u2191", "60.0 \u2191"]  # the highest point of each run, no name
    top = fig.layout.yaxis.range[1]
    for n, note in enumerate(notes):
        assert note.y == top and note.yanchor == "top" and note.yshift < 0  # below the top edge: not in the title
        assert note.font.color == fig.data[3 * n].line.color
    assert notes[0].yshift != notes[1].yshift  # one under the other, not on top of each other


def test_every_page_explains_its_numbers_and_promises_no_duration(app_env):
    at = new_app()
    show(at, "Training")
    no_exceptions(at)
    page = all_texts(at)
    assert "about a minute" not in page
    assert "has not trained runs like these yet" in page  # nothing measured: no time is promised

    runs = pair_on_disk(app_env / "runs", seed=3)
    from lapmusic.ui import server

    server.manager().estimator.ttl = 0.0  # read the runs folder again now, not after the cache's 30 s
    at = new_app()
    show(at, "Training")
    assert "should take about" in all_texts(at)  # an estimate from the runs this server has trained
    at.session_state["focus"] = [str(runs["random"]), str(runs["lae"])]
    show(at, "Training")
    no_exceptions(at)
    assert "how surprised the network is" in all_texts(at)  # the curves, in plain words
    show(at, "Pre-training")
    no_exceptions(at)
    page = all_texts(at)
    assert "In plain words" in page or "in plain words" in page
    assert "recent past" in page and any(m.label == "Energy captured at p" for m in at.metric)
    show(at, "Results")
    no_exceptions(at)
    page = all_texts(at)
    assert "**NLL** says how surprised" in page and "**tuned**" in page and "**exp. ACC**" in page
    show(at, "Runs")
    no_exceptions(at)
    assert "**test NLL**" in all_texts(at)
    show(at, "Data")
    assert "**test** (scored at the end, never seen before)" in all_texts(at)
