"""The app under Streamlit's AppTest for tests/test_app.py and tests/test_classroom.py: a tiny synthetic
dataset in a temporary cache, a temporary runs folder, small defaults, and helpers to read and drive a page.

Jobs run in the job manager's worker processes; the tests rerun the script until the page shows the expected
state (with a generous deadline that only a bug reaches).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import chorale_like_piece
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")
DEADLINE = 180.0  # seconds; a tiny run takes a few


def app_environment(tmp_path_factory):
    """The body of each test module's ``app_env`` fixture: a temporary cache (with datasets ``user:tiny`` and
    ``user:broken``) and runs folder, small defaults; yields the folder holding both."""
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
        json.dumps({"preset": "paper", "dataset": "user:tiny", "hidden": 8, "epochs": 2, "init": "both",
                    "batch_size": 4}),
    )
    rng = np.random.default_rng(0)
    tiny = Dataset("user:tiny", "tiny", [chorale_like_piece(rng, 24) for _ in range(6)],
                   [chorale_like_piece(rng, 16) for _ in range(2)], [chorale_like_piece(rng, 16) for _ in range(2)],
                   step_seconds=0.25)
    assert save_user_dataset(tiny) == "user:tiny"
    # Valid pieces of one frame: training refuses them, so a job on this dataset fails.
    broken = Dataset("user:broken", "broken", [chorale_like_piece(rng, 24) for _ in range(3)],
                     [chorale_like_piece(rng, 1)], [chorale_like_piece(rng, 8)], step_seconds=0.25)
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


def pair_on_disk(runs_dir: Path, seed: int) -> dict[str, Path]:
    """An LAE run and a random run with the same settings, trained (1 epoch) straight into the runs folder."""
    from lapmusic.data.registry import load_dataset
    from lapmusic.training.config import TrainConfig
    from lapmusic.training.train import train

    data = load_dataset("user:tiny")
    runs = {}
    for init in ("random", "lae"):
        run_dir = runs_dir / f"pair-{seed}-{init}"
        config = TrainConfig.from_settings(dict(dataset="user:tiny", hidden=6, init=init, epochs=1, batch_size=4,
                                                seed=seed, device="cpu", readout_steps=0))
        train(config, run_dir, dataset=data)
        runs[init] = run_dir
    return runs
