"""End to end in a real headless Chromium: ``streamlit run app.py``, choose a dataset, train, listen.

One page session: on the Samples tab, sample a prepared LAE/random pair side by side (trained into the runs
folder while the server starts) and check the two players and their playheads; then choose a dataset, train
both inits (tiny) and see both runs on the Training tab.

Starts the app on a free local port in a subprocess (temporary runs folder and dataset cache holding two
tiny datasets), drives it with Playwright exactly as a person would, and saves a screenshot
(``$LAPMUSIC_SCREENSHOT``, default ``browser-app.png`` in the test's temporary folder). Skipped when
Debian's ``/usr/bin/chromium`` or Playwright is missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import cache_dir_env, chorale_like_piece, streamlit_app

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[1]
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",  # the test starts the players from JavaScript
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed"),
]


def _make_dataset(key_name: str, rng, train: int) -> None:
    from lapmusic.data.dataset import Dataset
    from lapmusic.data.user import save_user_dataset

    dataset = Dataset(f"user:{key_name}", key_name, [chorale_like_piece(rng, 32) for _ in range(train)],
                      [chorale_like_piece(rng, 16) for _ in range(2)], [chorale_like_piece(rng, 16) for _ in range(2)], step_seconds=0.25)
    assert save_user_dataset(dataset) == f"user:{key_name}"


def _prepare_pair(runs_dir: Path, cache_dir: str) -> None:
    """An LAE run and a random run of one epoch on ``user:tiny``, trained straight into the runs folder."""
    from lapmusic.data.registry import load_dataset
    from lapmusic.training.config import TrainConfig
    from lapmusic.training.train import train

    with cache_dir_env(cache_dir):
        data = load_dataset("user:tiny")
    for init in ("random", "lae"):
        config = TrainConfig.from_settings(dict(dataset="user:tiny", hidden=6, init=init, epochs=1, batch_size=4, device="cpu",
                             readout_steps=0))
        train(config, runs_dir / f"prepared-{init}", dataset=data)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app served by ``streamlit run app.py`` on a free port; yields its URL."""
    pytest.importorskip("playwright.sync_api")
    root = tmp_path_factory.mktemp("browser")
    env = dict(os.environ)
    env.update(
        {
            "LAPMUSIC_CACHE_DIR": str(root / "cache"),
            "LAPMUSIC_RUNS_DIR": str(root / "runs"),
            "LAPMUSIC_POLL_SECONDS": "0.5",
            "LAPMUSIC_APP_DEFAULTS": json.dumps(
                {"preset": "paper", "dataset": "user:warmup", "hidden": 8, "epochs": 2, "init": "both", "batch_size": 4}
            ),
        }
    )
    with cache_dir_env(env["LAPMUSIC_CACHE_DIR"]):  # where _make_dataset saves
        rng = np.random.default_rng(0)
        _make_dataset("warmup", rng, 4)
        _make_dataset("tiny", rng, 6)
    # The prepared pair trains while the server starts.
    with streamlit_app(env, root / "streamlit.log",
                       while_starting=lambda: _prepare_pair(root / "runs", env["LAPMUSIC_CACHE_DIR"])) as url:
        yield url


def _playhead(page, index: int) -> tuple[float, float]:
    """``(seconds, x in px)`` of the ``index``-th player's playhead on the page."""
    return tuple(page.evaluate(
        """(i) => { const h = document.querySelectorAll('[id$="-playhead"]')[i];
                   return [parseFloat(h.dataset.seconds), parseFloat(h.style.left)]; }""",
        index,
    ))


def test_hear_lae_and_random_side_by_side_with_playheads_then_choose_data_and_train(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    screenshot = Path(os.environ.get("LAPMUSIC_SCREENSHOT") or tmp_path / "browser-app.png")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            # A new session on the Samples tab opens on the newest LAE run: the prepared pair's.
            page.goto(f"{server}/?page=Samples")
            page.get_by_role("button", name="Listen side by side: LAE and random").click(timeout=90_000)
            main = page.get_by_test_id("stMain")
            audio = main.locator("audio")
            expect(audio).to_have_count(2, timeout=60_000)
            for i in range(2):
                assert (audio.nth(i).get_attribute("src") or "").startswith("data:audio/wav;base64,")
            page.wait_for_function(
                "() => [...document.querySelectorAll('audio')].every(a => a.readyState >= 1)", timeout=30_000
            )

            # The playhead follows the audio: it moves while the LAE sample plays ...
            start = _playhead(page, 0)
            page.evaluate("document.querySelectorAll('audio')[0].play()")
            page.wait_for_function(
                """() => parseFloat(document.querySelectorAll('[id$="-playhead"]')[0].dataset.seconds) > 0.3""",
                timeout=20_000,
            )
            moving = _playhead(page, 0)
            assert moving[0] > start[0] and moving[1] > start[1]
            # ... and where the audio is set; starting the random sample pauses the LAE one.
            page.evaluate("(() => { const a = document.querySelectorAll('audio')[1]; a.currentTime = 1.0; a.play(); })()")
            page.wait_for_function("() => document.querySelectorAll('audio')[0].paused", timeout=10_000)
            page.wait_for_function(
                """() => parseFloat(document.querySelectorAll('[id$="-playhead"]')[1].dataset.seconds) >= 1.0""",
                timeout=10_000,
            )
            assert _playhead(page, 1)[1] > start[1]

            midi_button = page.get_by_role("button", name="Download MIDI").first
            with page.expect_download() as download_info:
                midi_button.click()
            assert Path(download_info.value.path()).read_bytes()[:4] == b"MThd"
            expect(page.get_by_role("button", name="Download WAV")).to_have_count(2)
            page.screenshot(path=str(screenshot.with_name(screenshot.stem + "-samples.png")), full_page=True)

            # Choose a dataset, as a person would, and train both inits (tiny settings).
            sidebar = page.get_by_test_id("stSidebar")
            sidebar.get_by_test_id("stSelectbox").click()
            page.get_by_role("option", name="my MIDI: tiny").click()
            sidebar.get_by_role("button", name="Train").click()
            expect(page.get_by_role("tab", name="Training", selected=True)).to_be_visible(timeout=30_000)
            # Both runs are on the Training tab at once (queued or starting). Their live curves are checked by
            # tests/test_app.py; waiting here for a trained epoch cost most of this test's time.
            expect(main.get_by_text("Run folder:")).to_have_count(2, timeout=60_000)
            body = page.inner_text("body")
            assert "Traceback" not in body and "Something went wrong" not in body
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000
