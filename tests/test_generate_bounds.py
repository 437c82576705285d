"""``lapmusic generate`` bounded like the app: the same limits and messages (lapmusic.sampling.limits), outputs
only where the user named, variations, and the checkpoint's epoch said when the run is still training."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from appkit import app_environment, new_app, no_exceptions, pair_on_disk, show, texts

from lapmusic.core.errors import LapMusicError
from lapmusic.sampling.limits import (
    MAX_PRIMER_FRAMES,
    MAX_SAMPLE_FRAMES,
    MAX_SAMPLE_SECONDS,
    MAX_SAMPLES,
    check_request,
    longest_steps,
)


def run_cli(*argv):
    from lapmusic.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def refusal(*argv) -> str:
    """The one ``error:`` line of a refused command (exit 2, no traceback)."""
    code, out, err = run_cli(*argv)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("[")]  # progress lines
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0].removeprefix("error: ")


@pytest.fixture(scope="module")
def app_env(tmp_path_factory):
    yield from app_environment(tmp_path_factory)


@pytest.fixture(scope="module")
def runs(app_env):
    """An LAE/random pair on ``user:tiny`` (0.25 s frames), in the app's runs folder."""
    return pair_on_disk(Path(app_env) / "runs", seed=4)


# ------------------------------------------------------------------------------------------ the limits
def test_the_limits_by_hand():
    assert longest_steps(0.25) == 1200 and longest_steps(0.5) == 600 and longest_steps(0.5, 100) == 500
    assert longest_steps(0.01) == MAX_SAMPLE_FRAMES and longest_steps(10.0) == 30 and longest_steps(400.0) == 0
    check_request(1200, 0.25)  # exactly 300 s
    check_request(30, 10.0)
    with pytest.raises(LapMusicError, match="ask for at most 1,200 steps"):
        check_request(1201, 0.25)
    with pytest.raises(LapMusicError, match="ask for at most 1,136 steps"):
        check_request(1200, 0.25, primer_frames=64)  # the primer is played too
    with pytest.raises(LapMusicError, match="variations must be 1 to 8"):
        check_request(8, 0.25, variations=9)
    with pytest.raises(LapMusicError, match=f"at most {MAX_PRIMER_FRAMES} frames"):
        check_request(8, 0.25, primer_frames=MAX_PRIMER_FRAMES + 1)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--steps", "100000"], "ask for at most 1,200 steps"),
        (["--step-seconds", "10"], "2,560 s (256 frames); a sample may last at most 300 s"),
        (["--steps", "20", "--step-seconds", "1e-6"], None),  # 20 frames of a microsecond: fine
        (["--steps", "5000", "--step-seconds", "0.001"], f"at most {MAX_SAMPLE_SECONDS:g} s and {MAX_SAMPLE_FRAMES:,} frames"),
        (["--primer", "chord:60,64,67:99999999"], f"a primer may have at most {MAX_PRIMER_FRAMES} frames"),
        (["--primer", f"test:0:{MAX_PRIMER_FRAMES + 1}"], f"a primer may have at most {MAX_PRIMER_FRAMES} frames"),
        (["--variations", "9"], "--variations must be 1 to 8"),
        (["--variations", "0"], "--variations must be 1 to 8"),
    ],
)
def test_generate_refuses_what_the_app_refuses_in_one_line(runs, tmp_path, args, words):
    out = tmp_path / "x.mid"
    if words is None:
        code, _, err = run_cli("generate", runs["lae"], "--out", out, *args)
        assert code == 0, err
        return
    assert words in refusal("generate", runs["lae"], "--out", out, *args)
    assert not out.exists()


def test_the_cli_and_the_app_say_the_same_thing(app_env, runs, tmp_path):
    """A chord held 64 frames then 1,200 steps of 0.25 s: 316 s, over the limit in both, in the same words."""
    cli = refusal("generate", runs["lae"], "--out", tmp_path / "x.mid", "--steps", "1200",
                  "--primer", "chord:C4,E4,G4:64")
    at = new_app()
    show(at, "Samples")
    at.selectbox(key="sample_run").set_value(str(runs["lae"]))
    at.run()
    steps = at.number_input(key="steps-1200")  # the app's longest length is the library's
    assert steps.max == longest_steps(0.25) // 8 * 8
    steps.set_value(1200)
    at.radio(key="primer_kind").set_value("chord")
    at.run()
    at.number_input(key="primer_chord_frames").set_value(64)
    at.button(key="generate").click()
    at.run()
    no_exceptions(at)
    assert texts(at, "error") == [cli]


# ------------------------------------------------------------------------------------------ outputs
def test_no_folder_is_created_for_an_output_in_a_missing_folder(runs, tmp_path):
    for option in ("--out", "--wav", "--html"):
        missing = tmp_path / f"missing{option}" / "deeper"
        argv = ["generate", runs["lae"], "--steps", "4", "--out", tmp_path / "ok.mid", option, missing / "x"]
        message = refusal(*argv)
        assert f"{option} {missing / 'x'}: the folder {missing} does not exist" in message
        assert not missing.parent.exists() and not (tmp_path / "ok.mid").exists()
    assert "is a folder" in refusal("generate", runs["lae"], "--out", tmp_path)


def test_variations_are_written_side_by_side(runs, tmp_path):
    code, out, err = run_cli("generate", runs["lae"], "--out", tmp_path / "song.mid", "--html", tmp_path / "song.html",
                             "--steps", "24", "--variations", "3", "--seed", "5", "--json")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    names = [Path(v["midi"]).name for v in result["variations"]]
    assert names == ["song-1.mid", "song-2.mid", "song-3.mid"] and result["midi"].endswith("song-1.mid")
    assert [Path(v["html"]).name for v in result["variations"]] == ["song-1.html", "song-2.html", "song-3.html"]
    assert not (tmp_path / "song.mid").exists()
    from lapmusic.data.midi import midi_to_roll

    rolls = [midi_to_roll(str(tmp_path / name), step_seconds=0.25) for name in names]
    assert len({r.tobytes() for r in rolls}) == 3  # three different continuations


# ------------------------------------------------------------------------------------------ a run still training
def test_generate_says_which_epoch_it_used_and_that_training_goes_on(runs, tmp_path):
    from lapmusic.core.io import atomic_write_json
    from lapmusic.core.lock import run_lock

    run_dir = runs["random"]
    argv = ["generate", run_dir, "--out", tmp_path / "a.mid", "--steps", "4", "--json"]
    code, out, err = run_cli(*argv)
    finished = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and finished["training"] is False
    assert (finished["epoch"], finished["checkpoint"]) == (1, "best")

    status_path = run_dir / "status.json"
    status = json.loads(status_path.read_text())
    try:
        # A trainer holds the folder's lock and its status says running: the run is still training.
        atomic_write_json(status_path, {**status, "state": "running"})
        with run_lock(run_dir):
            code, out, err = run_cli(*argv)
            result = json.loads(out.strip().splitlines()[-1])
            assert code == 0 and result["training"] is True and result["epoch"] == 1
            code, text, _ = run_cli(*argv[:-1])
            assert "used the model of epoch 1 (best so far): the run is still training" in text
    finally:
        atomic_write_json(status_path, status)
    code, text, _ = run_cli(*argv[:-1])
    assert "used the model of epoch 1 (best so far)" in text and "still training" not in text


def test_the_library_is_bounded_too(runs):
    from lapmusic.sampling.compose import sample_variations
    from lapmusic.sampling.sample import sample_run
    from lapmusic.training.results import load_run

    loaded = load_run(runs["lae"], device="cpu")
    with pytest.raises(LapMusicError, match="ask for at most 1,200 steps"):
        sample_run(loaded, steps=100_000)
    with pytest.raises(LapMusicError, match="ask for at most 30 steps"):
        sample_variations(loaded, steps=31, temperature=1.0, seed=0, step_seconds=10.0, save=False)
    with pytest.raises(LapMusicError, match="variations must be 1 to 8"):
        sample_variations(loaded, steps=8, temperature=1.0, seed=0, step_seconds=0.25, variations=9, save=False)
    from lapmusic.sampling.sample import generate

    with pytest.raises(LapMusicError, match=f"n_samples must be at most {MAX_SAMPLES} samples at once"):
        generate(loaded.model, steps=4, n_samples=MAX_SAMPLES + 1)
    many = sample_variations(loaded, steps=8, temperature=1.0, seed=0, step_seconds=0.25, variations=2,
                             primer=np.eye(88, dtype=np.uint8)[:3], render_audio=False, save=False)
    assert [d["meta"]["variation"] for _, d in many] == [1, 2] and all(s is None for s, _ in many)


@pytest.mark.parametrize("args, words", [
    (["--samples", "1000000000"], f"--samples must be 1 to {MAX_SAMPLES}, got 1,000,000,000"),
    (["--samples", "0"], f"--samples must be 1 to {MAX_SAMPLES}, got 0"),
    (["--steps", str(MAX_SAMPLE_FRAMES + 1)], f"--steps must be 1 to {MAX_SAMPLE_FRAMES:,} frames"),
])
def test_stats_of_a_run_is_bounded(runs, args, words):
    assert words in refusal("stats", "--run", runs["lae"], *args)


# ------------------------------------------------------------------------------------------ the app's click
def test_the_app_draws_variations_in_the_chosen_instrument_and_loudness(app_env, runs):
    import pretty_midi

    from lapmusic.sampling.store import list_samples

    at = new_app()
    show(at, "Samples")
    at.selectbox(key="sample_run").set_value(str(runs["lae"]))
    at.run()
    at.number_input(key="steps-1200").set_value(16)
    at.number_input(key="variations").set_value(3)
    at.selectbox(key="program").set_value(48)  # strings
    at.slider(key="velocity").set_value(60)
    at.radio(key="primer_kind").set_value("chord")
    at.run()
    before = len(list_samples(runs["lae"]))
    at.button(key="generate").click()
    at.run()
    no_exceptions(at)
    assert not at.error, texts(at, "error")
    shown = at.session_state["sample_shown"]
    assert [s["meta"]["variation"] for s in shown] == [1, 2, 3]
    assert len({s["roll"].tobytes() for s in shown}) == 3
    for item in shown:
        midi = pretty_midi.PrettyMIDI(io.BytesIO(item["midi"]))
        assert {i.program for i in midi.instruments} == {48}
        assert {n.velocity for i in midi.instruments for n in i.notes} == {60}
    players = [h.proto.body for h in at.get("html") if "-playhead" in h.proto.body]
    assert len(players) == 3  # heard side by side
    assert len(list_samples(runs["lae"])) == before + 3  # each variation kept in the run folder
