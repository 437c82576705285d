"""Presets (lapmusic.training.presets): explicit settings beat the preset, the CLI writes the recipe into
config.json, the chord vocabulary is fitted to the chords found (and said when asked for more), and the app's
default is the music preset with both inits."""

from __future__ import annotations

import contextlib
import io
import itertools
import json

import numpy as np
import pytest
from conftest import chorale_like_piece

from lapmusic.core.errors import LapMusicError
from lapmusic.training.presets import PRESETS, distinct_chords, get_preset, resolve, vocabulary_for


def test_explicit_settings_beat_the_preset_and_none_counts_as_not_set():
    settings = resolve("music", {"dropout": 0.1, "lr": None, "hidden": 32})
    assert settings["dropout"] == 0.1 and settings["hidden"] == 32
    assert settings["lr"] == PRESETS["music"].settings["lr"]  # None: the option was left out
    assert {k: settings[k] for k in ("output", "nade_vocab", "nade_repeat", "nade_repeat_window")} == {
        "output": "nade", "nade_vocab": 512, "nade_repeat": True, "nade_repeat_window": 32}
    assert resolve(None, {"lr": 0.5, "hidden": None}) == {"lr": 0.5}


def test_an_explicit_bernoulli_output_drops_the_presets_nade_settings():
    settings = resolve("music", {"output": "bernoulli"})
    assert settings["output"] == "bernoulli" and not any(k.startswith("nade_") for k in settings)
    from lapmusic.training.config import TrainConfig

    TrainConfig.from_settings(dict(settings, dataset="jsb")).validate()  # a valid Bernoulli run


def test_every_preset_makes_a_valid_config_and_an_unknown_one_is_refused():
    from lapmusic.training.config import TrainConfig

    for name in PRESETS:
        TrainConfig.from_settings(dict(resolve(name, {}), dataset="jsb")).validate()
    assert resolve("paper", {})["output"] == "bernoulli"
    with pytest.raises(LapMusicError, match="unknown preset 'jazz'; choose one of paper, music"):
        get_preset("jazz")


def test_the_presets_options_are_real_command_line_options():
    from lapmusic.cli.main import build_parser

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    known = {option for action in train._actions for option in action.option_strings}
    for preset in PRESETS.values():
        words = [w for w in preset.as_options().split() if w.startswith("--")]
        assert words and set(words) <= known, set(words) - known


def test_distinct_chords_against_a_set_of_frames():
    rng = np.random.default_rng(0)
    pieces = [(rng.random((n, 88)) < 0.02).astype(np.uint8) for n in (5, 30, 1)]
    pieces[1][3:9] = pieces[1][10]  # repeated frames count once
    brute = {tuple(frame) for piece in pieces for frame in piece}
    assert distinct_chords(pieces) == len(brute)
    assert distinct_chords([]) == 0 and distinct_chords([np.zeros((0, 88))]) == 0


def test_the_presets_vocabulary_is_cut_to_the_chords_found_unless_given_explicitly():
    for chords, asked in itertools.product((0, 1, 3, 100, 363, 1252, 5000), (64, 512)):
        assert vocabulary_for(chords, asked) == max(1, min(asked, int(0.4 * chords)))
    assert resolve("music", {}, train_chords=363)["nade_vocab"] == 145
    assert resolve("music", {}, train_chords=5000)["nade_vocab"] == 512
    assert resolve("music", {"nade_vocab": 400}, train_chords=363)["nade_vocab"] == 400
    assert "nade_vocab" not in resolve("paper", {}, train_chords=363)


def test_the_vocabulary_note_names_the_chords_found():
    from lapmusic.training.build import vocabulary_note
    from lapmusic.training.config import TrainConfig

    pieces = [np.eye(88, dtype=np.uint8)[:10], np.eye(88, dtype=np.uint8)[5:12]]  # 12 distinct frames
    config = TrainConfig.from_settings({"output": "nade", "nade_vocab": 50})
    note = vocabulary_note(config, pieces)
    assert "nade_vocab 50" in note and "12 distinct chords found" in note and "2 training pieces" in note
    assert vocabulary_note(TrainConfig.from_settings({"output": "nade", "nade_vocab": 12}), pieces) is None
    assert vocabulary_note(TrainConfig.from_settings({"output": "nade"}), pieces) is None


# ------------------------------------------------------------------------------------------ the CLI
@pytest.fixture()
def tiny_user_dataset(tmp_path, monkeypatch):
    """``user:tiny`` in a temporary cache: 6 / 2 / 2 short chorale-like pieces."""
    from lapmusic.data.dataset import Dataset
    from lapmusic.data.user import save_user_dataset

    monkeypatch.setenv("LAPMUSIC_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    tiny = Dataset("user:tiny", "tiny", [chorale_like_piece(rng, 24) for _ in range(6)],
                   [chorale_like_piece(rng, 16) for _ in range(2)], [chorale_like_piece(rng, 16) for _ in range(2)],
                   step_seconds=0.25)
    assert save_user_dataset(tiny) == "user:tiny"
    return tiny


def _cli(*argv) -> tuple[int, str, str]:
    from lapmusic.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


SMALL = ("--epochs", "1", "--hidden", "8", "--nade-hidden", "4", "--init", "random", "--device", "cpu")


def test_cli_preset_music_writes_the_recipe_into_config_json(tiny_user_dataset, tmp_path):
    code, _, err = _cli("train", "--preset", "music", "--dataset", "user:tiny", "--out", tmp_path / "run",
                        "--dropout", "0.1", *SMALL)
    assert code == 0, err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    chords = distinct_chords(tiny_user_dataset.train)
    assert (config["output"], config["nade_repeat"], config["nade_repeat_window"]) == ("nade", True, 32)
    assert config["nade_vocab"] == vocabulary_for(chords, 512) < chords  # fitted to the chords found
    assert (config["lr_patience"], config["batch_size"], config["lr"]) == (2, 8, 3e-3)  # from the preset
    assert (config["dropout"], config["hidden"], config["epochs"]) == (0.1, 8, 1)  # explicit flags win
    assert "note:" not in err


def test_cli_preset_paper_is_the_bernoulli_model_and_needs_no_hidden(tiny_user_dataset, tmp_path):
    code, _, err = _cli("train", "--preset", "paper", "--dataset", "user:tiny", "--out", tmp_path / "run",
                        "--epochs", "1", "--device", "cpu", "--init", "random")
    assert code == 0, err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["output"], config["hidden"], config["nade_vocab"], config["patience"]) == ("bernoulli", 128, 0, 5)


def test_cli_says_when_the_vocabulary_asks_for_more_chords_than_found(tiny_user_dataset, tmp_path):
    chords = distinct_chords(tiny_user_dataset.train)
    code, out, err = _cli("train", "--preset", "music", "--dataset", "user:tiny", "--out", tmp_path / "run",
                          "--nade-vocab", "512", *SMALL)
    assert code == 0, err
    assert f"note: --nade-vocab 512 asks for more chords than the 6 training pieces have: {chords} distinct " \
           "chords found" in err
    assert f"{chords} distinct chords found" in out  # repeated under the result
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    assert len(final["notes"]) == 1 and f"{chords} distinct chords found" in final["notes"][0]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["nade_vocab"] == 512  # explicit: kept


# ------------------------------------------------------------------------------------------ the app
def test_the_apps_default_is_the_music_preset_with_both_inits_and_paper_is_one_click_away(tmp_path, monkeypatch):
    pytest.importorskip("streamlit")
    from appkit import APP
    from streamlit.testing.v1 import AppTest

    from lapmusic.ui.defaults import DEMO_SECONDS, app_defaults

    monkeypatch.delenv("LAPMUSIC_APP_DEFAULTS", raising=False)
    defaults = app_defaults()
    assert (defaults["preset"], defaults["init"], defaults["dataset"], defaults["output"]) == ("music", "both", "bach",
                                                                                               "nade")
    monkeypatch.setenv("LAPMUSIC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LAPMUSIC_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert at.sidebar.radio[0].key == "preset" and at.sidebar.radio(key="preset").value == "music"  # first choice
    assert at.sidebar.radio(key="preset").options == ["The paper's model: independent keys (Bernoulli), for the "
                                                      "LAE-vs-random lesson", "The model that sounds like music: "
                                                      "RNN-NADE with a chord vocabulary and a copy window"]
    assert at.sidebar.radio(key="init").value == "both"
    assert at.sidebar.selectbox(key="nade_vocab").value == 512 and at.sidebar.checkbox(key="nade_repeat").value
    assert at.sidebar.number_input(key="nade_repeat_window").value == 32
    from lapmusic.ui.sidebar import Settings

    settings = Settings(**{k: at.session_state[k] for k in ("hidden", "init", "epochs", "lr", "batch_size",
                                                              "max_sequences", "patience", "seed", "device", "output",
                                                              "nade_vocab", "nade_repeat", "nade_repeat_window",
                                                              "preset", "max_seconds")}, dataset="bach")
    configs = settings.configs()
    assert [c.init for c in configs] == ["random", "lae"]
    for config in configs:  # the recipe, and the preset's settings that have no widget
        model = config.model
        assert (model.output, model.nade_vocab, model.nade_repeat, model.nade_repeat_window) == ("nade", 512, True, 32)
        assert (model.dropout, model.nade_hidden, config.lr_patience, config.eval_batch_size) == (0.3, 64, 2, 8)
        assert config.max_seconds == DEMO_SECONDS  # the demo's time budget

    at.sidebar.radio(key="preset").set_value("paper").run()
    assert not at.exception
    assert at.sidebar.radio(key="output").value == "bernoulli"
    assert not any(s.key == "nade_vocab" for s in at.sidebar.selectbox)
    at.sidebar.radio(key="preset").set_value("music").run()
    assert at.sidebar.radio(key="output").value == "nade" and at.sidebar.selectbox(key="nade_vocab").value == 512


def test_cli_compare_with_the_music_preset_trains_the_recipe_on_both_starts(tiny_user_dataset, tmp_path):
    code, out, err = _cli("compare", "--preset", "music", "--dataset", "user:tiny", "--hidden", "8", "--epochs", "1",
                          "--nade-hidden", "4", "--device", "cpu", "--out", tmp_path / "cmp")
    assert code == 0, err
    assert "nade output" in out
    configs = [json.loads(p.read_text()) for p in sorted((tmp_path / "cmp").glob("*/config.json"))]
    assert sorted(c["init"] for c in configs) == ["lae", "random"]
    chords = distinct_chords(tiny_user_dataset.train)
    assert all(c["nade_vocab"] == vocabulary_for(chords, 512) and c["nade_repeat_window"] == 32 for c in configs)
