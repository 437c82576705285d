"""Samples kept in run folders (lapmusic.sampling.store) and the player with a playhead (lapmusic.ui.player)."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from conftest import chorale_like_piece

from lapmusic.core.errors import LapMusicError
from lapmusic.data.midi import roll_to_midi_bytes
from lapmusic.sampling.compose import sample_to_run
from lapmusic.sampling.store import (
    SAMPLES_DIR,
    comparison_partner,
    list_samples,
    load_sample,
    save_sample,
)

WAV = b"RIFF" + bytes(40)


def _roll(seed: int = 0, frames: int = 12) -> np.ndarray:
    return chorale_like_piece(np.random.default_rng(seed), frames)


def test_save_list_load_round_trip(tmp_path):
    roll = _roll()
    midi = roll_to_midi_bytes(roll)
    saved = save_sample(tmp_path, roll, midi=midi, wav=WAV, meta={"seed": 3, "temperature": 0.8, "primer": "none"},
                        name="first")
    folder = tmp_path / SAMPLES_DIR
    assert sorted(p.name for p in folder.iterdir()) == ["first.json", "first.mid", "first.npz", "first.wav"]
    again = load_sample(tmp_path, "first")
    np.testing.assert_array_equal(again.roll(), roll)
    assert again.midi_bytes() == midi and again.wav_bytes() == WAV
    assert again.meta["seed"] == 3 and again.meta["frames"] == 12 and again.meta["files"] == ["mid", "npz", "wav"]
    assert saved.meta == again.meta
    assert "seed 3 · T 0.8 · none" in again.label

    # Without audio: no .wav, wav_bytes() is None.
    save_sample(tmp_path, roll, midi=midi, meta={"seed": 4, "temperature": 1.0}, name="second")
    assert load_sample(tmp_path, "second").wav_bytes() is None
    with pytest.raises(LapMusicError, match="already exists"):
        save_sample(tmp_path, roll, midi=midi, meta={}, name="second")


def test_listing_is_newest_first_and_skips_incomplete_or_foreign_files(tmp_path):
    roll = _roll()
    midi = roll_to_midi_bytes(roll)
    names = []
    for seed in range(3):
        names.append(save_sample(tmp_path, roll, midi=midi, meta={"seed": seed, "temperature": 1.0}).name)
        assert re.fullmatch(rf"\d{{8}}-\d{{6}}-seed{seed}-t1-[0-9a-f]{{4}}", names[-1])
    folder = tmp_path / SAMPLES_DIR
    (folder / "halfway.mid").write_bytes(midi)  # a crash before the .json: not listed
    (folder / "broken.json").write_text("{not json")
    (folder / "broken.mid").write_bytes(midi)
    (folder / "orphan.json").write_text(json.dumps({"seed": 1}))  # no .mid
    assert [s.name for s in list_samples(tmp_path)] == names[::-1]
    assert list_samples(tmp_path / "nowhere") == []


def test_bad_input_is_refused_with_a_message(tmp_path):
    roll = _roll()
    midi = roll_to_midi_bytes(roll)
    with pytest.raises(LapMusicError, match="sample name"):
        load_sample(tmp_path, "../config")
    with pytest.raises(LapMusicError, match="no sample named"):
        load_sample(tmp_path, "missing")
    with pytest.raises(LapMusicError, match="MThd"):
        save_sample(tmp_path, roll, midi=b"nope", meta={})
    with pytest.raises(LapMusicError, match="RIFF"):
        save_sample(tmp_path, roll, midi=midi, wav=b"nope", meta={})
    with pytest.raises(LapMusicError, match="does not exist"):
        save_sample(tmp_path / "no-run", roll, midi=midi, meta={})
    saved = save_sample(tmp_path, roll, midi=midi, meta={}, name="x")
    saved.roll_path.write_bytes(b"garbage")
    with pytest.raises(LapMusicError, match="could not be read"):
        saved.roll()


def test_comparison_partner_is_the_other_init_with_the_same_settings():
    base = {"dataset": "bach", "hidden": 8, "epochs": 5, "lr": 0.001, "seed": 0}
    lae = {**base, "init": "lae", "alpha": 0.7, "lae_solver": "exact"}  # init-only settings may differ
    runs = [
        ("other-hidden", {**base, "hidden": 16, "init": "random"}),
        ("other-seed", {**base, "seed": 1, "init": "random"}),
        ("lae-again", {**lae}),
        ("random", {**base, "init": "random"}),
        ("random-older", {**base, "init": "random"}),
    ]
    assert comparison_partner(lae, runs) == "random"  # the first (newest) match
    assert comparison_partner({**base, "init": "random"}, runs) == "lae-again"
    assert comparison_partner({**base, "hidden": 32, "init": "lae"}, runs) is None
    assert comparison_partner({**base, "init": "gru?"}, runs) is None


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """An LAE run and a random run of one epoch on a tiny dataset (loaded with ``load_run``)."""
    from lapmusic.data.dataset import Dataset
    from lapmusic.training.config import TrainConfig
    from lapmusic.training.results import load_run
    from lapmusic.training.train import train

    rng = np.random.default_rng(1)
    data = Dataset("user:st", "st", [chorale_like_piece(rng, 24) for _ in range(4)], [chorale_like_piece(rng, 12)],
                   [chorale_like_piece(rng, 12)], step_seconds=0.25)
    root = tmp_path_factory.mktemp("runs")
    loaded = {}
    for init in ("lae", "random"):
        config = TrainConfig.from_settings(dict(dataset="user:st", hidden=6, init=init, epochs=1, batch_size=2, device="cpu",
                             readout_steps=0))  # the L-BFGS readout fit is slow to start; not under test here
        train(config, root / init, dataset=data)
        loaded[init] = load_run(root / init, device="cpu")
    return loaded


def test_sample_to_run_saves_in_the_run_folder_and_is_reproducible(two_runs):
    primer = _roll(5, 3)
    common = dict(steps=10, temperature=1.0, seed=7, primer_spec="chord:x", primer=primer, max_polyphony=4,
                  step_seconds=0.25)
    names = set()
    for init, loaded in two_runs.items():
        saved, data = sample_to_run(loaded, name="pair-1", **common, render_audio=False)
        names.add(saved.name)
        assert data["roll"].shape == (13, 88)
        np.testing.assert_array_equal(data["roll"][:3], primer)  # the primer is kept as given
        assert (data["roll"][3:].sum(axis=1) <= 4).all()  # max polyphony
        again = load_sample(loaded.run_dir, "pair-1")
        np.testing.assert_array_equal(again.roll(), data["roll"])
        meta = again.meta
        assert (meta["init"], meta["seed"], meta["temperature"], meta["steps"], meta["primer"]) == (init, 7, 1.0, 10, "chord:x")
        assert meta["primer_frames"] == 3 and meta["epoch"] == loaded.epoch and again.midi_bytes()[:4] == b"MThd"
        # Same model, same seed, same primer: the same sample (not saved this time).
        none, repeat = sample_to_run(loaded, **common, render_audio=False, save=False)
        assert none is None
        np.testing.assert_array_equal(repeat["roll"], data["roll"])
    assert names == {"pair-1"}
    saved, data = sample_to_run(two_runs["lae"], **common)  # with audio
    assert saved.has_wav and data["wav"][:4] == b"RIFF" and saved.meta["renderer"] in ("fluidsynth", "pretty_midi")


# ------------------------------------------------------------------------------------------ the player
def test_player_is_self_contained_and_carries_the_roll_and_the_audio():
    from lapmusic.ui.player import MAX_EMBED_BYTES, player_html, roll_notes

    roll = _roll(2, 16)
    roll[3:6, 0] = 1  # a held A0 across the primer boundary (frame 4)
    document = player_html(roll, wav=WAV, step_seconds=0.5, primer_frames=4, title="LAE <b>", player_id="p1")
    assert "http://" not in document and "https://" not in document and "<script src" not in document  # offline
    assert "LAE &lt;b&gt;" in document  # the title is escaped
    uri = re.search(r'src="data:audio/wav;base64,([^"]+)"', document).group(1)
    assert base64.b64decode(uri) == WAV
    data = json.loads(re.search(r"const D = (\{.*?\});", document).group(1))
    assert data["frames"] == 16 and data["step"] == 0.5 and data["primer"] == 4
    # The notes rebuild the roll exactly, and no note crosses the primer boundary.
    rebuilt = np.zeros_like(roll)
    for pitch, start, end, is_primer in data["notes"]:
        assert rebuilt[start:end, pitch - 21].sum() == 0
        rebuilt[start:end, pitch - 21] = 1
        assert (end <= 4) if is_primer else (start >= 4)
    np.testing.assert_array_equal(rebuilt, roll)
    assert data["notes"] == roll_notes(roll, 4)
    assert 'id="p1-playhead"' in document and "data-seconds" in document

    without = player_html(roll, wav=None, step_seconds=0.5)
    assert "<audio" not in without
    too_big = player_html(roll, wav=b"RIFF" + bytes(MAX_EMBED_BYTES), step_seconds=0.5)
    assert "<audio" not in too_big and "play it with the player below" in too_big


def test_playhead_position_follows_the_audio_time_in_a_real_browser(tmp_path):
    """The playhead's x moves with ``audio.currentTime`` (headless Chromium; skipped when absent)."""
    import os

    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("/usr/bin/chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    from lapmusic.data.midi import roll_to_midi
    from lapmusic.sampling.audio import render_wav
    from lapmusic.ui.player import player_html

    roll = _roll(3, 16)
    wav = render_wav(roll_to_midi(roll, step_seconds=0.25), min_seconds=4.0).wav
    page_file = tmp_path / "player.html"
    page_file.write_text(player_html(roll, wav=wav, step_seconds=0.25, player_id="p"))
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 800, "height": 500})
            page.goto(page_file.as_uri())
            page.wait_for_function("document.getElementById('p-audio').readyState >= 1")
            left = page.evaluate("parseFloat(document.getElementById('p-playhead').style.left)")
            page.evaluate("document.getElementById('p-audio').currentTime = 2.0")  # half of the 4 s roll
            page.wait_for_function("document.getElementById('p-playhead').dataset.seconds === '2.000'")
            middle = page.evaluate("parseFloat(document.getElementById('p-playhead').style.left)")
            width = page.evaluate("document.getElementById('p-wrap').clientWidth")
            assert left == pytest.approx(38)  # the left margin: time 0
            assert middle == pytest.approx(38 + 0.5 * (width - 38 - 8), abs=1.0)
        finally:
            browser.close()
