"""The app's page flows with Streamlit's AppTest: real training (tiny), real sampling, no browser.

Every test uses the tiny datasets and the temporary runs folder of :mod:`appkit`, so the whole file runs in
about a minute.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from appkit import (
    APP,
    all_texts,
    app_environment,
    finished_count,
    new_app,
    no_exceptions,
    pair_on_disk,
    rerun_until,
    show,
    texts,
)
from conftest import chorale_like_piece
from streamlit.testing.v1 import AppTest


@pytest.fixture(scope="module")
def app_env(tmp_path_factory):
    """The app's temporary cache and runs folder for this module."""
    yield from app_environment(tmp_path_factory)


def test_the_first_page_shows_the_data_its_piano_roll_and_its_audio(app_env):
    at = new_app()
    no_exceptions(at)
    assert [t.label for t in at.tabs] == ["Data", "Pre-training", "Training", "Samples", "Results", "Runs"]
    dataset = at.sidebar.selectbox(key="dataset_choice")
    assert dataset.value == "user:tiny"
    # The default is in the widget itself (its index), not only in a one-time session-state value that a
    # page drawn late can miss (then showing, and training, the first dataset of the list).
    assert dataset.options[dataset.proto.default] == dataset.format_func("user:tiny")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Pieces (train / valid / test)"] == "6 / 2 / 2"
    assert metrics["Frames (all splits)"] == f"{6 * 24 + 4 * 16:,}"
    assert metrics["Notes per frame"] == "4.00"  # three chord notes + one melody note in every frame
    # The roll, and the audio only on request (serving every new page a WAV slowed first page loads).
    assert len(at.get("plotly_chart")) == 1 and not at.get("audio")
    at.button(key="data_listen_button").click()
    at.run()
    assert len(at.get("audio")) == 1 and at.get("audio")[0].proto.autoplay
    # Another tab and back: the player is there, but does not play the piece again by itself.
    show(at, "Results")
    assert not at.get("audio")
    show(at, "Data")
    assert len(at.get("audio")) == 1 and not at.get("audio")[0].proto.autoplay

    at.radio(key="data_split").set_value("test")
    at.run()
    at.number_input(key="data_piece-user:tiny-test").set_value(1)
    at.run()
    no_exceptions(at)
    assert "test piece 1: 16 frames" in json.dumps(json.loads(at.get("plotly_chart")[0].proto.spec))
    assert not at.get("audio")  # another piece: its own Listen button, not the last piece's audio


def test_train_both_inits_watch_progress_spectrum_curves_then_generate(app_env):
    at = new_app()
    at.sidebar.button(key="train").click()
    at.run()
    no_exceptions(at)
    assert at.session_state["page"] == "Training"  # pressing Train shows the Training tab
    focus = [Path(p).name for p in at.session_state["focus"]]
    assert len(focus) == 2 and all(any(name in c for c in texts(at, "caption")) for name in focus)

    rerun_until(at, lambda a: finished_count(a) == 2, "both runs to finish")
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = {trace.get("name") for trace in chart["data"]}
    assert any("LAE" in str(n) for n in names) and any("random" in str(n) for n in names)
    epochs_drawn = {x for trace in chart["data"] for x in (trace.get("x") or [])}
    assert {1, 2} <= epochs_drawn

    show(at, "Pre-training")
    no_exceptions(at)
    assert not at.error, all_texts(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Hidden units p"] == "8"
    assert metrics["Energy captured at p"].endswith("%")
    assert 0.0 < float(metrics["Energy captured at p"].rstrip("%")) <= 100.0
    assert metrics["Solver"] in ("exact", "gram", "approx")
    assert len(at.get("plotly_chart")) == 1

    show(at, "Samples")
    at.number_input(key="steps-1200").set_value(16)  # 0.25 s frames: at most 300 s of audio
    at.radio(key="primer_kind").set_value("chord")
    at.button(key="generate").click()
    at.run()
    no_exceptions(at)
    assert not at.error, texts(at, "error")
    sample = at.session_state["sample"]
    assert sample["roll"].shape == (2 + 16, 88)  # a chord held 2 frames, then 16 generated
    assert sample["midi"][:4] == b"MThd" and sample["wav"][:4] == b"RIFF"
    players = [h.proto.body for h in at.get("html") if "-playhead" in h.proto.body]
    assert len(players) == 1 and "data:audio/wav;base64," in players[0]  # the player with its playhead
    downloads = [d.proto.label for d in at.get("download_button")]
    assert downloads == ["Download MIDI", "Download WAV"]
    assert any("Musicality" in e.label for e in at.expander)  # lapmusic.sampling.stats beside real pieces
    assert any("distinct chords" in str(row) for row in at.dataframe[-1].value["statistic"])

    at.radio(key="primer_kind").set_value("piece")
    at.run()
    assert at.number_input(key="primer_piece-user:tiny").max == 1  # the tiny set has two test pieces
    at.number_input(key="primer_frames").set_value(4)
    at.button(key="generate").click()
    at.run()
    assert not at.error, texts(at, "error")
    sample = at.session_state["sample"]
    assert sample["primer_frames"] == 4 and sample["roll"].shape == (4 + 16, 88)
    from lapmusic.data.registry import load_dataset

    np.testing.assert_array_equal(sample["roll"][:4], load_dataset("user:tiny").test[0][:4])

    show(at, "Results")
    no_exceptions(at)
    rows = at.dataframe[0].value
    assert len(rows) == 2 and set(rows["init"]) == {"lae", "random"}
    anchors = at.dataframe[1].value
    assert list(anchors["JSB Chorales"]) == ["8.100", "-", "7.720"]

    show(at, "Runs")
    table = at.dataframe[0].value
    mine = set(table[table["yours"] == "yes"]["folder"])
    assert mine == {Path(p).name for p in at.session_state["focus"]} and len(mine) == 2

    # A page refresh is a new Streamlit session with the same signed ?session= link: the same runs again.
    refreshed = AppTest.from_file(APP, default_timeout=60)
    refreshed.query_params["session"] = at.session_state["session_id"]
    refreshed.query_params["token"] = at.session_state["session_token"]
    refreshed.query_params["page"] = "Training"
    refreshed.run()
    no_exceptions(refreshed)
    assert refreshed.session_state["focus"] == at.session_state["focus"]
    assert finished_count(refreshed) == 2 and len(refreshed.get("plotly_chart")) == 1


def test_stop_a_run_then_resume_it(app_env):
    at = new_app()
    at.sidebar.radio(key="init").set_value("random")
    at.sidebar.number_input(key="epochs").set_value(1000)
    at.sidebar.number_input(key="patience").set_value(0)  # no early stopping: only Stop ends this run
    at.sidebar.button(key="train").click()
    at.run()
    rerun_until(
        at,
        lambda a: any(b.label == "Stop" for b in a.button)
        and (Path(a.session_state["focus"][0]) / "checkpoint.pt").is_file(),
        "a running job with a first checkpoint",
    )
    assert "epochs done" in all_texts(at)
    # One browser session may not queue more than two new runs: a second pair is refused with a message
    # (another seed, so that neither run of the pair exists already: following one is free).
    at.sidebar.radio(key="init").set_value("both")
    at.sidebar.number_input(key="seed").set_value(1)
    at.run()
    at.sidebar.button(key="train").click()
    at.run()
    assert any("this browser may have at most" in e for e in texts(at.sidebar, "error"))
    assert len(at.session_state["focus"]) == 1

    next(b for b in at.button if b.label == "Stop").click()
    rerun_until(at, lambda a: "was stopped after epoch" in all_texts(a), "the run to stop")
    run_dir = Path(at.session_state["focus"][0])
    assert json.loads((run_dir / "status.json").read_text())["state"] == "cancelled"

    at.button(key=f"resume-{run_dir.name}").click()
    at.run()
    rerun_until(at, lambda a: any(b.label == "Stop" for b in a.button), "the resumed run")
    next(b for b in at.button if b.label == "Stop").click()
    rerun_until(at, lambda a: "was stopped after epoch" in all_texts(a), "the resumed run to stop")
    assert at.session_state["focus"] == [str(run_dir)]


def test_a_failing_job_shows_its_error_and_the_app_stays_usable(app_env):
    at = new_app()
    at.sidebar.selectbox(key="dataset_choice").set_value("user:broken")
    at.sidebar.radio(key="init").set_value("random")
    at.run()
    at.sidebar.button(key="train").click()
    at.run()
    rerun_until(at, lambda a: any("failed" in e for e in texts(a, "error")), "the job to fail")
    message = next(e for e in texts(at, "error") if "failed" in e)
    assert "no validation piece of two or more frames" in message
    assert "Traceback" not in all_texts(at)

    at.sidebar.selectbox(key="dataset_choice").set_value("user:tiny")
    show(at, "Data")
    no_exceptions(at)
    assert {m.label: m.value for m in at.metric}["Pieces (train / valid / test)"] == "6 / 2 / 2"


def test_uploads_bad_files_are_listed_by_name_and_the_rest_used(app_env):
    from lapmusic.data.midi import roll_to_midi_bytes
    from lapmusic.data.midifile import MAX_MIDI_BYTES

    good = roll_to_midi_bytes(chorale_like_piece(np.random.default_rng(1), 32), step_seconds=0.25)
    at = new_app()
    at.sidebar.selectbox(key="dataset_choice").set_value("__upload__")
    at.run()
    no_exceptions(at)
    assert at.sidebar.button(key="build_upload").disabled  # nothing uploaded yet
    at.sidebar.file_uploader(key="uploads_0").set_value(
        [
            ("song one.mid", good, "audio/midi"),
            ("song two.mid", good, "audio/midi"),
            ("notes.txt", b"hello", "text/plain"),
            ("empty.mid", b"", "audio/midi"),
            ("broken.mid", b"MThd\x00\x00\x00\x06garbage", "audio/midi"),
            ("huge.mid", b"MThd" + bytes(MAX_MIDI_BYTES), "audio/midi"),
        ]
    )
    at.sidebar.text_input(key="upload_name").set_value("class songs")
    at.run()
    at.sidebar.button(key="build_upload").click()
    at.run()
    no_exceptions(at)
    warnings = texts(at.sidebar, "warning")
    assert [w.split(":")[0] for w in warnings] == ["notes.txt", "empty.mid", "broken.mid", "huge.mid"]
    assert "not a MIDI file" in warnings[0] and "empty" in warnings[1] and "corrupt" in warnings[2]
    assert "too large" in warnings[3]
    built = at.sidebar.selectbox(key="dataset_choice").value  # this session's own: the name and its tag
    assert re.fullmatch(r"user:class-songs-u[0-9a-f]{8}", built)
    assert any(f"Built {built} from 2 file(s)" in s for s in texts(at.sidebar, "success"))
    assert {m.label: m.value for m in at.metric}["Pieces (train / valid / test)"] == "2 / 0 / 0"


def test_runs_are_listed_after_a_restart_and_can_be_reopened_and_sampled(app_env):
    runs_dir = Path(app_env) / "runs"
    pair = pair_on_disk(runs_dir, seed=21)  # trained before this server's session: nobody follows them
    at = new_app()  # a new browser session: it owns no jobs, but sees every run on disk
    show(at, "Runs")
    no_exceptions(at)
    table = at.dataframe[0].value
    listed = dict(zip(table["folder"], zip(table["state"], table["yours"])))
    assert {listed[run.name] for run in pair.values()} == {("finished", "")}
    chosen = str(pair["lae"])
    at.multiselect(key="runs_chosen").set_value([chosen])
    at.run()
    at.button(key="runs_open").click()
    at.run()
    no_exceptions(at)
    assert at.session_state["page"] == "Training"
    assert any(pair["lae"].name in c for c in texts(at, "caption"))
    assert len(at.get("plotly_chart")) == 1

    show(at, "Runs")
    at.multiselect(key="runs_chosen").set_value([chosen])
    at.run()
    at.button(key="runs_sample").click()
    at.run()
    assert at.session_state["page"] == "Samples"
    assert at.selectbox(key="sample_run").value == chosen


def test_a_corrupt_run_folder_gives_messages_not_tracebacks(app_env, monkeypatch):
    from lapmusic.core.io import atomic_write_json

    run = Path(app_env) / "runs" / "20200101-000000-user_tiny-h8-lae-s0-dead"
    from lapmusic.training.config import TrainConfig

    # a complete config (a missing key is its own error): the checkpoint and the LAE are the corrupt parts
    atomic_write_json(run / "config.json", TrainConfig.from_settings(dict(dataset="user:tiny", hidden=8, init="lae", epochs=2)).to_dict())
    atomic_write_json(run / "status.json", {"state": "finished", "epoch": 2, "epochs": 2})
    (run / "lae.npz").write_bytes(b"not an npz file")
    (run / "best.pt").write_bytes(b"not a checkpoint")
    (run / "metrics.jsonl").write_text('{"epoch": 0, "train_nll": 9.0, "valid_nll": 9.5, "valid_acc": 10.0}\n')

    at = new_app()
    at.session_state["focus"] = [str(run)]
    show(at, "Pre-training")
    no_exceptions(at)
    assert len(at.error) == 1 and "Traceback" not in at.error[0].value

    show(at, "Samples")
    at.selectbox(key="sample_run").set_value(str(run))
    at.run()
    at.button(key="generate").click()
    at.run()
    no_exceptions(at)
    assert any("not a lapmusic checkpoint" in e or "could not be read" in e for e in texts(at, "error")), texts(at, "error")

    # An unexpected bug in a page is one line in the page (the traceback goes to the server log).
    import lapmusic.plots

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(lapmusic.plots, "loss_figure", broken)
    from lapmusic.ui.pages import training as training_page

    training_page._loss_figure.cache_clear()  # shared across pages: a cached figure would not call it
    at.session_state["focus"] = [str(run)]
    show(at, "Training")
    no_exceptions(at)
    assert any("Something went wrong here (RuntimeError: boom)" in e for e in texts(at, "error"))
    assert at.sidebar.button(key="train")  # the rest of the app is still there
    show(at, "Results")
    no_exceptions(at)
    assert not at.error


def test_listen_to_lae_and_random_side_by_side_then_again_from_the_saved_list(app_env):
    from lapmusic.sampling.store import list_samples

    runs = pair_on_disk(Path(app_env) / "runs", seed=5)
    at = new_app()
    show(at, "Samples")
    no_exceptions(at)
    assert at.selectbox(key="sample_run").value  # a new session opens on an LAE run
    at.selectbox(key="sample_run").set_value(str(runs["random"]))  # either run of the pair offers the comparison
    at.run()
    at.number_input(key="steps-1200").set_value(16)
    at.number_input(key="sample_seed").set_value(11)
    at.radio(key="primer_kind").set_value("chord")
    at.run()
    at.button(key="generate_pair").click()
    at.run()
    no_exceptions(at)
    assert not at.error, texts(at, "error")
    shown = at.session_state["sample_shown"]
    assert [s["init"] for s in shown] == ["lae", "random"]  # LAE left, random right
    assert {(s["meta"]["seed"], s["meta"]["primer"], s["meta"]["temperature"], s["meta"]["steps"]) for s in shown} == {
        (11, "chord:C4,E4,G4:2", 1.0, 16)}
    np.testing.assert_array_equal(shown[0]["roll"][:2], shown[1]["roll"][:2])  # the same primer
    players = [h.proto.body for h in at.get("html") if "-playhead" in h.proto.body]
    assert len(players) == 2
    assert [d.proto.label for d in at.get("download_button")] == ["Download MIDI", "Download WAV"] * 2

    # Both samples are kept in their run folders under one name, and listed.
    names = {init: [s.name for s in list_samples(run)] for init, run in runs.items()}
    assert names["lae"] == names["random"] and len(names["lae"]) == 1
    saved = list_samples(runs["lae"])[0]
    assert saved.has_wav and saved.midi_bytes()[:4] == b"MThd" and saved.meta["seed"] == 11
    np.testing.assert_array_equal(saved.roll(), shown[0]["roll"])

    # A new session plays them again, side by side, from the saved list.
    again = new_app()
    show(again, "Samples")
    again.selectbox(key="sample_run").set_value(str(runs["lae"]))
    again.run()
    again.selectbox(key="saved_sample").set_value(saved.name)
    again.run()
    no_exceptions(again)
    players = [h.proto.body for h in again.get("html") if "-playhead" in h.proto.body]
    assert len(players) == 2 and all("data:audio/wav;base64," in p for p in players)
    assert [d.proto.label for d in again.get("download_button")] == ["Download MIDI", "Download WAV"] * 2


def test_a_run_without_a_partner_offers_no_side_by_side(app_env):
    from lapmusic.data.registry import load_dataset
    from lapmusic.training.config import TrainConfig
    from lapmusic.training.train import train

    run_dir = Path(app_env) / "runs" / "alone-lae"
    train(TrainConfig.from_settings(dict(dataset="user:tiny", hidden=5, init="lae", epochs=1, batch_size=4,
                                        device="cpu", readout_steps=0)),
          run_dir, dataset=load_dataset("user:tiny"))
    at = new_app()
    show(at, "Samples")
    at.selectbox(key="sample_run").set_value(str(run_dir))
    at.run()
    no_exceptions(at)
    assert not [b for b in at.button if b.key == "generate_pair"]
    assert any("train *both* to compare" in c for c in texts(at, "caption"))


def test_results_rows_use_short_headers_and_show_the_tuned_acc_when_the_run_has_it():
    from types import SimpleNamespace

    from lapmusic.ui.pages.results import COLUMN_HELP, result_row

    final = {"dataset": "jsb", "init": "lae", "epochs": 12, "nll": 9.4691, "acc": 17.21, "expected_acc": 17.8,
             "baselines": {"marginal_nll": 11.599, "copy_previous_acc": 21.296}, "total_seconds": 64}
    run = SimpleNamespace(final=final, config={"dataset": "jsb", "hidden": 128, "seed": 0, "init": "lae"})
    row = result_row(run)
    assert list(row) == list(COLUMN_HELP)  # every column explained in its header's tooltip
    assert (row["run"], row["NLL"], row["NLL base"], row["ACC"], row["ACC base"], row["published"]) == (
        "jsb · h128 · seed 0", "9.469", "11.599", "17.2%", "21.3%", "7.720")
    assert row["ACC tuned"] == "-"
    row = result_row(SimpleNamespace(final={**final, "acc_tuned": 29.04, "threshold": 0.21}, config=run.config))
    assert row["ACC tuned"] == "29.0% (t=0.21)"
