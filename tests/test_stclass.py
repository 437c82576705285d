"""The classroom benchmark's HTTP student (benchmarks/stclass.py) against a real ``streamlit run app.py``.

A student without a browser loads the page over Streamlit's websocket, keeps the session link the app puts
in the URL, presses Train (the button's widget id from the received elements, a trigger as the browser
sends it), follows the Training tab's fragment refreshes and sees the first loss curve; a second student on
the same settings follows the same run. Training is the fake one of tests/fake_train.py (no torch), in real
worker processes. Nothing here asserts how fast anything is.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import cache_dir_env, chorale_like_piece, streamlit_app

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).parent
sys.path.insert(0, str(REPO / "benchmarks"))

pytest.importorskip("websockets.asyncio.client")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from lapmusic.data.dataset import Dataset
    from lapmusic.data.user import save_user_dataset

    root = tmp_path_factory.mktemp("stclass")
    env = dict(os.environ, LAPMUSIC_CACHE_DIR=str(root / "cache"), LAPMUSIC_RUNS_DIR=str(root / "runs"),
               LAPMUSIC_POLL_SECONDS="0.3", LAPMUSIC_WORKER_TRAIN="fake_train:train", FAKE_TRAIN_SETUP_SECONDS="2",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), str(HERE), os.environ.get("PYTHONPATH")])),
               LAPMUSIC_APP_DEFAULTS=json.dumps({"dataset": "user:tiny", "hidden": 8, "epochs": 2}))
    with cache_dir_env(env["LAPMUSIC_CACHE_DIR"]):  # where save_user_dataset writes
        rng = np.random.default_rng(0)
        pieces = [chorale_like_piece(rng, 16) for _ in range(8)]
        save_user_dataset(Dataset("user:tiny", "tiny", pieces[:4], pieces[4:6], pieces[6:], step_seconds=0.25))
    with streamlit_app(env, root / "streamlit.log") as url:
        yield url, root / "runs"


def test_an_http_student_loads_the_page_presses_train_and_sees_the_first_curve(server):
    from stclass import classroom

    url, runs_dir = server
    reports = asyncio.run(classroom(url, students=2, spread=0.5, deadline=60))
    for report in reports:
        assert report["load_train_button_s"] is not None and report["load_finished_s"] is not None
        assert report["first_curve_s"] is not None, report  # the Training fragment's refreshes drew the curve
        assert report["reconnects"] == 0 and not report["errors"], report
        assert report["auto_reruns_sent"] >= 1  # the run had no curve at the click: a refresh drew it
    # Both students pressed Train on the same settings: one LAE/random pair, trained once for both.
    assert len([p for p in runs_dir.iterdir() if not p.name.startswith(".")]) == 2


def test_a_student_keeps_the_session_link_the_app_sets(server):
    from stclass import Student

    url, _ = server

    async def load() -> Student:
        stop = asyncio.Event()
        student = Student(url)
        task = asyncio.ensure_future(student.run(stop))
        await asyncio.wait_for(student.loaded.wait(), 60)
        stop.set()
        await task
        return student

    student = asyncio.run(load())
    assert "session=" in student.query and "token=" in student.query
    assert "Train" in student.buttons and "Hidden units" in student.numbers
