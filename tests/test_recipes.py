"""The training recipe knobs of issue 9: recurrent radius, readout start, lag decay, seeds by value, and the
decision threshold chosen on the validation split (final.json, evaluate)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from conftest import synthetic_config, synthetic_dataset

from lapmusic.cli import main as cli
from lapmusic.cli.common import seed_list
from lapmusic.cli.options import RECIPE_DEFAULTS
from lapmusic.core.errors import LapMusicError
from lapmusic.model.lae_init import spectral_radius
from lapmusic.model.metrics import accuracy
from lapmusic.training import build as build_module
from lapmusic.training.config import TrainConfig
from lapmusic.training.results import load_run
from lapmusic.training.rundir import read_history
from lapmusic.training.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dataset():
    return synthetic_dataset((20, 6, 6), (10, 30))


def config(**fields) -> TrainConfig:
    return synthetic_config(**{"hidden": 10, "init": "lae", "epochs": 1, "lae_solver": "exact", **fields})


def initial_model(run_dir):
    payload = torch.load(run_dir / "best.pt", weights_only=True)  # epoch 0 is the best after 0 epochs
    return payload["model"]


@pytest.mark.parametrize("init", ["lae", "random"])
def test_rec_radius_scales_w_rec_to_exactly_that_radius(tmp_path, dataset, init):
    train(config(init=init, epochs=1, rec_radius=0.37, lr=1e-12), tmp_path / "r", dataset=dataset)
    weights = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)["model"]["recurrent.weight_hh_l0"]
    assert spectral_radius(weights) == pytest.approx(0.37, rel=1e-4)  # lr 1e-12: the init, one step later
    final = json.loads((tmp_path / "r" / "final.json").read_text())
    assert final["pretrain"]["rec_radius_before"] > 0


def test_readout_starts(tmp_path, dataset):
    train(config(readout_start="zero", epochs=1, lr=1e-12), tmp_path / "zero", dataset=dataset)
    state = torch.load(tmp_path / "zero" / "checkpoint.pt", weights_only=True)["model"]
    assert float(state["head.readout.weight"].abs().max()) < 1e-9
    assert float(state["head.readout.bias"].abs().max()) < 1e-9
    # Zero logits: every key at p = 1/2, NLL = 88 ln 2 per frame at epoch 0.
    assert read_history(tmp_path / "zero")[0]["valid_nll"] == pytest.approx(88 * np.log(2), rel=1e-6)
    train(config(readout_start="constant", epochs=1, lr=1e-12), tmp_path / "const", dataset=dataset)
    state = torch.load(tmp_path / "const" / "checkpoint.pt", weights_only=True)["model"]
    assert float(state["head.readout.weight"].abs().max()) < 1e-9
    frames = np.concatenate([x[1:] for x in dataset.train]).mean(0).clip(1e-4, 1 - 1e-4)
    np.testing.assert_allclose(state["head.readout.bias"].numpy(), np.log(frames / (1 - frames)), atol=1e-4)
    fitted = train(config(epochs=1), tmp_path / "fit", dataset=dataset)
    # The fitted readout starts below the constant model on the training split.
    assert read_history(tmp_path / "fit")[0]["train_nll"] < read_history(tmp_path / "const")[0]["train_nll"]
    assert fitted["state"] == "finished"


def test_lae_decay_and_max_lag_reach_the_lae(tmp_path, dataset):
    train(config(lae_decay=0.5, lae_max_lag=6), tmp_path / "d", dataset=dataset)
    lae = load_run(tmp_path / "d").lae
    assert lae.decay == 0.5 and lae.max_lag == 6
    assert np.abs(np.linalg.eigvals(lae.B)).max() <= 0.5 + 1e-9


def test_bad_recipe_settings_are_refused():
    for bad, words in ((dict(readout_start="lsq"), "readout_start must be one of"),
                       (dict(rec_radius=0.0), "rec_radius must be positive"),
                       (dict(lae_decay=1.5), "lae_decay must be positive and at most 1"),
                       (dict(readout_ridge=-1.0), "readout_ridge must be non-negative"),
                       (dict(init="random", cell="gru", rec_radius=0.5), "rec_radius needs cell 'rnn'")):
        with pytest.raises(LapMusicError, match=words):
            config(**bad).validate()


def test_final_json_holds_the_validation_threshold_and_evaluate_reports_both_accs(tmp_path, dataset, monkeypatch,
                                                                                 capsys):
    final = train(config(init="random", epochs=2), tmp_path / "run", dataset=dataset)
    assert 0 < final["threshold"] < 1
    run = load_run(tmp_path / "run")
    # The threshold maximises validation ACC over the 0.005 grid: check against a brute-force scan.
    with torch.no_grad():
        probs, targets = [], []
        for piece in dataset.valid:
            x = torch.as_tensor(piece[:-1], dtype=torch.float32)[None]
            probs.append(torch.sigmoid(run.model(x)[0][0]).double().numpy())
            targets.append(piece[1:])
    probs, targets = np.concatenate(probs), np.concatenate(targets)
    scan = [accuracy(probs, targets, j / 200) for j in range(1, 200)]
    assert accuracy(probs, targets, final["threshold"]) == pytest.approx(max(scan), abs=1e-9)
    monkeypatch.setattr(build_module, "load_run_dataset", lambda key: dataset)
    assert cli.main(["evaluate", str(tmp_path / "run"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["threshold"] == final["threshold"] and result["threshold_source"] == "final.json"
    assert result["acc_tuned"] == pytest.approx(final["acc_tuned"], rel=1e-9)
    assert cli.main(["evaluate", str(tmp_path / "run"), "--threshold", "0.5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["acc_tuned"] == pytest.approx(result["acc"] if result["acc"] is not None else 0.0)
    assert cli.main(["evaluate", str(tmp_path / "run"), "--threshold", "1.5"]) == 2


def test_seeds_by_count_or_by_value():
    assert seed_list("3") == [0, 1, 2]
    assert seed_list("11,12,13") == [11, 12, 13]
    assert seed_list("7,") == [7]
    for bad, words in (("0", "takes a count"), ("a,b", "takes a count"), ("1,1", "needs distinct seeds"),
                       ("-2", "takes a count")):
        with pytest.raises(argparse.ArgumentTypeError, match=words):
            seed_list(bad)


def test_compare_runs_the_seeds_given(tmp_path, dataset, monkeypatch, capsys):
    monkeypatch.setattr(build_module, "load_run_dataset", lambda key: dataset)
    assert cli.main(["compare", "--dataset", "jsb", "--hidden", "6", "--epochs", "1", "--device", "cpu",
                     "--batch-size", "6", "--seeds", "11,13", "--lae-max-lag", "5", "--rec-radius", "0.5",
                     "--readout-start", "constant", "--lr-patience", "3", "--out", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["seeds"] == [11, 13] and summary["runs"] == 4
    saved = [json.loads((tmp_path / d / "config.json").read_text()) for d in summary["run_dirs"]]
    assert sorted({c["seed"] for c in saved}) == [11, 13]
    assert all(c["rec_radius"] == 0.5 and c["lr_patience"] == 3 for c in saved)
    assert all(c["lae_max_lag"] == 5 and c["readout_start"] == "constant" for c in saved if c["init"] == "lae")


def test_greedy_decoding_uses_the_threshold():
    from lapmusic.sampling.sample import draw_frame, generate

    logits = torch.logit(torch.tensor([[0.9, 0.3, 0.2, 0.6]]))
    generator = torch.Generator().manual_seed(0)
    assert draw_frame(logits, 0.0, None, generator).tolist() == [[1, 0, 0, 1]]
    assert draw_frame(logits, 0.0, None, generator, threshold=0.25).tolist() == [[1, 1, 0, 1]]
    model = torch.nn.Module()
    with pytest.raises(LapMusicError, match="threshold"):
        generate(model, steps=2, temperature=0.0, threshold=1.0)


def test_generate_cli_threshold_valid_needs_a_threshold_in_final_json(tmp_path, dataset, monkeypatch, capsys):
    train(config(init="random", epochs=1), tmp_path / "run", dataset=dataset)
    monkeypatch.setattr(build_module, "load_run_dataset", lambda key: dataset)
    out = tmp_path / "x.mid"
    assert cli.main(["generate", str(tmp_path / "run"), "--steps", "4", "--temperature", "0", "--threshold",
                     "valid", "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["threshold"] == json.loads((tmp_path / "run" / "final.json").read_text())["threshold"]
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    final.pop("threshold")
    (tmp_path / "run" / "final.json").write_text(json.dumps(final))
    assert cli.main(["generate", str(tmp_path / "run"), "--steps", "4", "--threshold", "valid",
                     "--out", str(out)]) == 2
    assert "final.json" in capsys.readouterr().err


def test_help_defaults_are_trainconfigs():
    defaults = TrainConfig()
    assert RECIPE_DEFAULTS == {name: getattr(defaults, name) for name in RECIPE_DEFAULTS}
