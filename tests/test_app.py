"""The app's page flows with Streamlit's AppTest: real training (tiny), real sampling, no browser.

Every test uses a tiny synthetic user dataset in a temporary cache and a temporary runs folder, so the
whole file runs in about a minute. Jobs run in the job manager's worker processes; the tests rerun the
script until the page shows the expected state (with a generous deadline that only a bug reaches).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import chorale_like_piece
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")
DEADLINE = 180.0  # seconds; a tiny run takes a few


@pytest.fixture(scope="module")
def app_env(tmp_path_factory):
    """Temporary cache (with datasets ``user:tiny`` and ``user:broken``) and runs folder, small defaults."""
    from lapmusic.data.dataset import Dataset
    from lapmusic.data.user import save_user_dataset

    root = tmp_path_factory.mktemp("app")
    patch = pytest.MonkeyPatch()
    patch.setenv("LAPMUSIC_CACHE_DIR", str(root / "cache"))
    patch.setenv("LAPMUSIC_RUNS_DIR", str(root / "runs"))
    patch.setenv("LAPMUSIC_POLL_SECONDS", "0.3")
    patch.setenv("LAPMUSIC_MAX_JOBS", "1")
    patch.setenv(
        "LAPMUSIC_APP_DEFAULTS",
        json.dumps({"dataset": "user:tiny", "hidden": 8, "epochs": 2, "init": "both", "batch_size": 4}),
    )
    rng = np.random.default_rng(0)
    tiny = Dataset("user:tiny", "tiny", [chorale_like_piece(rng, 24) for _ in range(6)], [chorale_like_piece(rng, 16) for _ in range(2)],
                   [chorale_like_piece(rng, 16) for _ in range(2)], step_seconds=0.25)
    assert save_user_dataset(tiny) == "user:tiny"
    # Valid pieces of one frame: training refuses them, so a job on this dataset fails.
    broken = Dataset("user:broken", "broken", [chorale_like_piece(rng, 24) for _ in range(3)], [chorale_like_piece(rng, 1)],
                     [chorale_like_piece(rng, 8)], step_seconds=0.25)
    assert save_user_dataset(broken) == "user:broken"
    yield root
    from lapmusic.ui import server

    server.manager().close()
    patch.undo()


def new_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    return at.run()


def no_exceptions(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def texts(at: AppTest, kind: str) -> list[str]:
    return [element.value for element in getattr(at, kind)]


def all_texts(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "info", "success", "warning", "error"):
        parts.extend(str(v) for v in texts(at, kind))
    parts.extend(str(p.proto.text) for p in at.get("progress"))
    return "\n".join(parts)


def show(at: AppTest, page: str) -> AppTest:
    """Click a tab (the tabs are bound to the ``page`` query parameter, as in the browser's URL)."""
    at.session_state["page"] = page
    at.query_params["page"] = page
    at.run()
    assert at.session_state["page"] == page
    return at


def rerun_until(at: AppTest, condition, what: str) -> AppTest:
    deadline = time.monotonic() + DEADLINE
    while True:
        at.run()
        no_exceptions(at)
        if condition(at):
            return at
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; page says:\n{all_texts(at)}")
        time.sleep(0.3)


def finished_count(at: AppTest) -> int:
    return sum(" finished" in s for s in texts(at, "success"))


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
    assert metrics["Solver"] in ("exact", "approx")
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
    assert any("you already have runs queued or training" in e for e in texts(at.sidebar, "error"))
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
    at.sidebar.file_uploader(key="uploads").set_value(
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
    assert any("Built user:class-songs from 2 file(s)" in s for s in texts(at.sidebar, "success"))
    assert at.sidebar.selectbox(key="dataset_choice").value == "user:class-songs"
    assert {m.label: m.value for m in at.metric}["Pieces (train / valid / test)"] == "2 / 0 / 0"


def test_runs_are_listed_after_a_restart_and_can_be_reopened_and_sampled(app_env):
    runs_dir = Path(app_env) / "runs"
    pair = _pair_on_disk(runs_dir, seed=21)  # trained before this server's session: nobody follows them
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
    atomic_write_json(run / "config.json", TrainConfig(dataset="user:tiny", hidden=8, init="lae", epochs=2).to_dict())
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


# ------------------------------------------------------------------------------ classroom
def test_a_made_up_session_link_gets_a_new_session_and_a_signed_one_is_restored(app_env):
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["session"] = "alice"  # somebody else's name, no token
    at.run()
    no_exceptions(at)
    assert at.session_state["session_id"] != "alice" and len(at.session_state["session_id"]) >= 16
    assert any("not valid" in w for w in texts(at, "warning"))
    assert at.query_params["token"] and at.query_params["session"] == at.session_state["session_id"]

    forged = AppTest.from_file(APP, default_timeout=60)
    forged.query_params["session"] = at.session_state["session_id"]
    forged.query_params["token"] = "A" * 22  # the right id with a guessed token
    forged.run()
    assert forged.session_state["session_id"] != at.session_state["session_id"]

    again = AppTest.from_file(APP, default_timeout=60)
    again.query_params["session"] = at.session_state["session_id"]
    again.query_params["token"] = at.session_state["session_token"]
    again.run()
    assert again.session_state["session_id"] == at.session_state["session_id"] and not again.warning


def test_a_second_student_with_the_same_settings_follows_the_same_runs(app_env):
    first = new_app()
    first.sidebar.number_input(key="seed").set_value(7)
    first.sidebar.text_input(key="student_name").set_value("Anna")
    first.sidebar.button(key="train").click()
    first.run()
    no_exceptions(first)
    second = new_app()
    second.sidebar.number_input(key="seed").set_value(7)
    second.sidebar.button(key="train").click()
    second.run()
    no_exceptions(second)
    assert second.session_state["focus"] == first.session_state["focus"] and len(first.session_state["focus"]) == 2
    assert any("already exist with exactly these settings" in s for s in texts(second.sidebar, "success"))
    assert all("-Anna-" in Path(p).name for p in first.session_state["focus"])
    assert "Followed by 2 sessions" in all_texts(second)
    # Stop from the second student only unfollows: the runs go on for the first.
    rerun_until(second, lambda a: any(b.label == "Stop following" for b in a.button), "a Stop following button")
    next(b for b in second.button if b.label == "Stop following").click()
    second.run()
    assert any("no longer follow" in i for i in texts(second, "info"))
    rerun_until(first, lambda a: finished_count(a) == 2, "both runs to finish for the first student")


def test_the_nade_settings_reach_the_submitted_config_only_with_the_nade_output(app_env):
    at = new_app()
    assert not any(s.key == "nade_vocab" for s in at.sidebar.selectbox)  # hidden with the Bernoulli output
    at.sidebar.radio(key="output").set_value("nade")
    at.run()
    at.sidebar.selectbox(key="nade_vocab").set_value(512)
    assert not any(n.key == "nade_repeat_window" for n in at.sidebar.number_input)  # only with the repeat
    at.sidebar.checkbox(key="nade_repeat").check()
    at.run()
    at.sidebar.number_input(key="nade_repeat_window").set_value(16)
    at.sidebar.radio(key="init").set_value("random")
    at.sidebar.number_input(key="epochs").set_value(1)
    at.sidebar.number_input(key="seed").set_value(11)
    at.sidebar.button(key="train").click()
    at.run()
    no_exceptions(at)
    (run_dir,) = at.session_state["focus"]
    config = json.loads((Path(run_dir) / "config.json").read_text())
    assert (config["output"], config["nade_vocab"], config["nade_repeat"]) == ("nade", 512, True)
    assert config["nade_repeat_window"] == 16
    rerun_until(at, lambda a: finished_count(a) == 1, "the NADE run to finish")
    from lapmusic.ui.sidebar import Settings

    back = Settings(dataset="user:tiny", hidden=8, init="lae", epochs=1, lr=1e-3, batch_size=4, max_sequences=0,
                    patience=0, seed=0, device="cpu", output="bernoulli", nade_vocab=512, nade_repeat=True,
                    nade_repeat_window=16)
    (bernoulli,) = back.configs()  # the NADE's settings are left out with the Bernoulli output
    assert (bernoulli.nade_vocab, bernoulli.nade_repeat, bernoulli.nade_repeat_window) == (0, False, 1)


def test_the_page_does_not_block_while_a_dataset_builds(app_env, monkeypatch):
    import threading

    import lapmusic.data.registry
    from lapmusic.data.dataset import Dataset
    from lapmusic.data.user import save_user_dataset

    rng = np.random.default_rng(3)
    pieces = [chorale_like_piece(rng, 16) for _ in range(2)]
    save_user_dataset(Dataset("user:slow", "slow", pieces, pieces, pieces, step_seconds=0.25))
    gate = threading.Event()
    real = lapmusic.data.registry.load_dataset

    def slow(key, progress=None):
        if key == "user:slow":
            progress(0.5, "building")
            gate.wait(60)
        return real(key, progress)

    monkeypatch.setattr(lapmusic.data.registry, "load_dataset", slow)
    at = new_app()
    at.sidebar.selectbox(key="dataset_choice").set_value("user:slow")
    at.run()
    no_exceptions(at)
    assert any("Preparing user:slow: building" in str(p.proto.text) and "left" in str(p.proto.text)
               for p in at.get("progress"))
    assert at.sidebar.button(key="train")  # the sidebar is usable meanwhile
    gate.set()
    rerun_until(at, lambda a: any(m.label == "Pieces (train / valid / test)" for m in a.metric), "the data page")


def test_the_teacher_password_unlocks_stopping_any_run(app_env, monkeypatch):
    monkeypatch.setenv("LAPMUSIC_TEACHER_PASSWORD", "orchestra")
    at = show(new_app(), "Runs")
    at.text_input(key="teacher_password").set_value("wrong")
    at.button(key="teacher_enter").click()
    at.run()
    assert any("Wrong password" in e for e in texts(at, "error"))
    assert "teacher" not in at.session_state
    at.text_input(key="teacher_password").set_value("orchestra")
    at.button(key="teacher_enter").click()
    at.run()
    no_exceptions(at)
    assert at.session_state["teacher"] is True
    assert any("Teacher mode" in c for c in texts(at, "caption"))


def _pair_on_disk(runs_dir: Path, seed: int) -> dict[str, Path]:
    """An LAE run and a random run with the same settings, trained (1 epoch) straight into the runs folder."""
    from lapmusic.data.registry import load_dataset
    from lapmusic.training.config import TrainConfig
    from lapmusic.training.train import train

    data = load_dataset("user:tiny")
    runs = {}
    for init in ("random", "lae"):
        run_dir = runs_dir / f"pair-{seed}-{init}"
        train(TrainConfig(dataset="user:tiny", hidden=6, init=init, epochs=1, batch_size=4, seed=seed, device="cpu",
                          readout_steps=0), run_dir, dataset=data)
        runs[init] = run_dir
    return runs


def test_listen_to_lae_and_random_side_by_side_then_again_from_the_saved_list(app_env):
    from lapmusic.sampling.store import list_samples

    runs = _pair_on_disk(Path(app_env) / "runs", seed=5)
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
    train(TrainConfig(dataset="user:tiny", hidden=5, init="lae", epochs=1, batch_size=4, device="cpu", readout_steps=0),
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


RACE = """
import sys, threading
import lapmusic.ui.server  # what app.py imports first in every session's script thread
from lapmusic.plots import loss_figure

history = {"LAE": [{"epoch": 0, "train_nll": 11.0, "valid_nll": 11.0, "valid_acc": 0.0}]}
other = threading.Thread(target=lambda: __import__("pandas"))  # another session's lazy import
other.start()
failures = []
while other.is_alive():
    try:
        loss_figure(history).to_dict()
    except AttributeError as exc:
        failures.append(str(exc))
other.join()
print(len(failures), failures[:1])
"""


def test_a_chart_drawn_while_another_session_imports_pandas_does_not_fail():
    # Plotly looks pandas up in sys.modules without importing it: unless lapmusic.ui.server imports pandas
    # whole first, a chart drawn while another thread is importing it fails.
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", RACE], cwd=repo, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(repo)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "0", out.stdout


def test_the_refresh_interval_grows_with_the_pages_that_refresh_so_their_cpu_stays_within_the_budget():
    """The interval is max(base, pages x cpu per refresh / share), pages counted over the last minute."""
    from lapmusic.ui.fairness import POLL_FORGET_SECONDS, PollBudget

    budget = PollBudget(share=0.25, first_cpu=0.04)
    assert budget.seconds("a", 1.5, now=0.0) == 1.5  # one page: the base
    for n in range(30):
        interval = budget.seconds(f"page{n}", 1.5, now=1.0)
    assert interval == pytest.approx(max(1.5, 31 * 0.04 / 0.25))  # 4.96 s for 31 pages
    assert budget.seconds("a", 1.5, now=2.0) == pytest.approx(interval)  # the same page counts once
    # Pages that stopped refreshing a minute ago no longer count.
    assert budget.seconds("a", 1.5, now=1.0 + POLL_FORGET_SECONDS + 1) == 1.5
    # The cost per refresh is measured: a moving average moves towards what the refreshes take.
    for _ in range(100):
        budget.record("a", 0.002, now=100.0)
    assert budget.cpu == pytest.approx(0.002, rel=1e-3)
    for n in range(30):
        interval = budget.seconds(f"page{n}", 1.5, now=100.0)
    assert interval == 1.5  # cheap refreshes: thirty pages keep the base interval


def test_pages_that_only_refresh_their_fragment_keep_counting_in_the_refresh_budget():
    """A live Training tab calls ``seconds`` once, when it is drawn, then only refreshes its fragment
    (``record``): thirty such pages must still count after a minute, or the interval falls back to the base
    and the refreshes overload the server again."""
    from lapmusic.ui.fairness import POLL_FORGET_SECONDS, PollBudget

    budget = PollBudget(share=0.25, first_cpu=0.04)
    for n in range(30):
        budget.seconds(f"page{n}", 1.5, now=0.0)  # each page draws its live view once
    for t in range(1, 4):  # then the pages only refresh, for three minutes
        for n in range(30):
            budget.record(f"page{n}", 0.04, now=t * POLL_FORGET_SECONDS * 0.9)
    later = 3 * POLL_FORGET_SECONDS * 0.9 + 1
    assert budget.seconds("late", 1.5, now=later) == pytest.approx(31 * 0.04 / 0.25)


def _until(condition, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


def _gate_run(slots: int, count: int) -> tuple[list[int], int]:
    """``count`` threads arrive at a FairGate one after the other and stay inside until released together;
    returns the order they got in and the most that were inside at once."""
    from lapmusic.ui.fairness import FairGate

    gate, lock, release = FairGate(slots=slots), threading.Lock(), threading.Event()
    entered, inside, most = [], [0], [0]

    def refresh(n: int) -> None:
        with gate:
            with lock:
                entered.append(n)
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            release.wait(5)
            with lock:
                inside[0] -= 1

    threads = []
    for n in range(count):  # each takes its ticket before the next thread starts
        threads.append(threading.Thread(target=refresh, args=(n,)))
        threads[-1].start()
        _until(lambda: gate.arrived == n + 1, f"refresh {n} to arrive")
    _until(lambda: len(entered) >= slots, f"the first {slots} refreshes to get in")
    with lock:
        assert entered == list(range(slots))  # the first ones are in, the others wait
    release.set()
    for thread in threads:
        thread.join(5)
    return entered, most[0]


def test_page_refreshes_take_turns_in_arrival_order():
    """The gate lets refreshes in first come, first served, at most ``slots`` at once."""
    entered, most = _gate_run(slots=1, count=8)
    assert entered == list(range(8)) and most == 1  # one at a time: exactly the arrival order
    entered, most = _gate_run(slots=2, count=8)
    assert sorted(entered) == list(range(8)) and most == 2


def test_the_server_does_not_collect_all_garbage_after_every_script_run():
    """Streamlit's ``gc.collect(2)`` after each script run (fragment refreshes included) is off, in the
    server's options and in .streamlit/config.toml."""
    import tomllib
    from streamlit import config

    import lapmusic.ui.server  # noqa: F401 - sets the option on import

    assert config.get_option("runner.postScriptGC") is False
    toml = tomllib.loads((Path(__file__).resolve().parents[1] / ".streamlit" / "config.toml").read_text())
    assert toml["runner"]["postScriptGC"] is False
