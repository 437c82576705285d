"""Continue your own music, in a real headless Chromium: upload a 3/4 MIDI file on the Samples tab, ask for two
variations, hear both (two audio players), and download a MIDI that keeps the primer's meter and tempo.

Starts ``streamlit run app.py`` on a free local port (temporary runs folder and cache holding one tiny dataset
and one tiny run trained while the server starts) and drives it with Playwright. Skipped when Debian's
``/usr/bin/chromium`` or Playwright is missing.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import mido
import numpy as np
import pretty_midi
import pytest
from conftest import cache_dir_env, chorale_like_piece, streamlit_app

CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed"),
]


def _waltz(path: Path, qpm: float = 100.0) -> None:
    """Four bars of 3/4 at ``qpm``: a melody in quarter notes over a bass on each first beat."""
    midi = pretty_midi.PrettyMIDI(initial_tempo=qpm)
    midi.time_signature_changes.append(pretty_midi.TimeSignature(3, 4, 0.0))
    piano = pretty_midi.Instrument(0)
    beat = 60.0 / qpm
    for b in range(12):
        piano.notes.append(pretty_midi.Note(80, (60, 64, 67, 65)[b % 4], b * beat, (b + 1) * beat))
        if b % 3 == 0:
            piano.notes.append(pretty_midi.Note(70, 48, b * beat, (b + 3) * beat))
    midi.instruments.append(piano)
    midi.write(str(path))


def _prepare_run(runs_dir: Path, cache_dir: str) -> None:
    """One random-init run of one epoch on ``user:tiny`` (0.25 s frames, no meter recorded: 4/4)."""
    from lapmusic.data.registry import load_dataset
    from lapmusic.training.config import TrainConfig
    from lapmusic.training.train import train

    with cache_dir_env(cache_dir):
        data = load_dataset("user:tiny")
    config = TrainConfig.from_settings(dict(dataset="user:tiny", hidden=6, init="random", epochs=1, batch_size=4,
                                            device="cpu"))
    train(config, runs_dir / "prepared-random", dataset=data)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("playwright.sync_api")
    from lapmusic.data.dataset import Dataset
    from lapmusic.data.user import save_user_dataset

    root = tmp_path_factory.mktemp("browser-primer")
    env = dict(os.environ)
    env.update({
        "LAPMUSIC_CACHE_DIR": str(root / "cache"),
        "LAPMUSIC_RUNS_DIR": str(root / "runs"),
        "LAPMUSIC_POLL_SECONDS": "0.5",
        "LAPMUSIC_APP_DEFAULTS": json.dumps({"dataset": "user:tiny", "hidden": 8, "epochs": 1, "init": "random",
                                             "batch_size": 4}),
    })
    with cache_dir_env(env["LAPMUSIC_CACHE_DIR"]):
        rng = np.random.default_rng(0)
        tiny = Dataset("user:tiny", "tiny", [chorale_like_piece(rng, 32) for _ in range(4)],
                       [chorale_like_piece(rng, 16) for _ in range(2)], [chorale_like_piece(rng, 16) for _ in range(2)],
                       step_seconds=0.25)
        assert save_user_dataset(tiny) == "user:tiny"
    with streamlit_app(env, root / "streamlit.log",
                       while_starting=lambda: _prepare_run(root / "runs", env["LAPMUSIC_CACHE_DIR"])) as url:
        yield url


def test_upload_a_primer_hear_variations_and_download_its_meter(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    primer = tmp_path / "my waltz.mid"
    _waltz(primer)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{server}/?page=Samples")
            main = page.get_by_test_id("stMain")
            main.get_by_text("my MIDI file").click(timeout=90_000)
            main.locator("input[type=file]").set_input_files(str(primer))
            expect(main.get_by_text("my waltz.mid")).to_be_visible(timeout=30_000)
            variations = main.get_by_role("spinbutton", name="Variations per click")
            variations.fill("2")
            variations.press("Enter")
            expect(variations).to_have_value("2", timeout=10_000)
            main.get_by_role("button", name="Generate", exact=True).click()

            audio = main.locator("audio")
            expect(audio).to_have_count(2, timeout=60_000)  # both variations, side by side
            for i in range(2):
                assert (audio.nth(i).get_attribute("src") or "").startswith("data:audio/wav;base64,")
            expect(main.get_by_text("2 variations", exact=False)).to_be_visible()
            body = page.inner_text("body")
            assert "Traceback" not in body and "Variation 2 · random init" in body
            assert body.count("3/4 at 100 qpm") == 2  # each player's caption names the meter it is written in

            with page.expect_download() as download_info:
                main.get_by_role("button", name="Download MIDI").first.click()
            data = Path(download_info.value.path()).read_bytes()
            page.screenshot(path=str(tmp_path / "browser-primer.png"), full_page=True)
        finally:
            browser.close()
    song = mido.MidiFile(file=io.BytesIO(data))
    signatures = [(m.numerator, m.denominator) for t in song.tracks for m in t if m.type == "time_signature"]
    tempi = [mido.tempo2bpm(m.tempo) for t in song.tracks for m in t if m.type == "set_tempo"]
    assert signatures == [(3, 4)]
    assert tempi == [pytest.approx(100.0, rel=1e-3)]
    # The primer is in it: its first notes, C4 then E4 on the beat (2 frames a beat at 100 qpm).
    notes = sorted(pretty_midi.PrettyMIDI(io.BytesIO(data)).instruments[0].notes, key=lambda n: (n.start, n.pitch))
    assert [n.pitch for n in notes if n.start < 0.01] == [48, 60]
