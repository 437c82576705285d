"""The app in a classroom, with Streamlit's AppTest: signed session links, students following the same runs,
the teacher password, settings that reach the submitted config, a page that does not block on a dataset build.
"""

from __future__ import annotations

import json
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
    assert (bernoulli.model.nade_vocab, bernoulli.model.nade_repeat, bernoulli.model.nade_repeat_window) == (0, False, 1)


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
