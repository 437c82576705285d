"""The training engine on tiny synthetic data: learning, resume, cancel, divergence, run folders, CLI."""

from __future__ import annotations

import dataclasses
import json
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import synthetic_config, synthetic_dataset

from lapmusic.cli import main as cli
from lapmusic.core.errors import CheckpointError, LapMusicError
from lapmusic.model.config import ModelConfig
from lapmusic.model.metrics import accuracy, expected_accuracy, nll
from lapmusic.model.rnn import PianoRollRNN
from lapmusic.training import build as build_module
from lapmusic.training.config import TrainConfig
from lapmusic.training.epoch import TrainingDiverged, evaluate_tensors, length_batches, train_epoch
from lapmusic.training.results import compare_runs, evaluate, load_run
from lapmusic.training.rundir import CHECKPOINT_FORMAT, read_history, read_status
from lapmusic.training.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dataset():
    return synthetic_dataset((24, 6, 6), (10, 40))


def small_config(**fields) -> TrainConfig:
    return synthetic_config(**{"hidden": 12, "init": "random", "epochs": 4, **fields})


def test_config_round_trips_through_json_and_refuses_nonsense():
    config = small_config(alpha=0.2, max_train_sequences=5)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(LapMusicError, match="unknown training config keys"):
        TrainConfig.from_dict({**config.to_dict(), "hiddne": 3})
    with pytest.raises(LapMusicError, match="init 'lae' needs cell 'rnn'"):
        small_config(init="lae", cell="lstm").validate()
    with pytest.raises(LapMusicError, match="lr must be positive"):
        small_config(lr=-1.0).validate()


# config.json of a run folder made before the network's settings moved into ModelConfig (copied verbatim from
# `lapmusic train --dataset jsb --hidden 16 --epochs 1 --max-sequences 16 --device cpu --batch-size 4 --seed 12
# --init lae --output nade --nade-hidden 8 --nade-vocab 16 --nade-repeat --nade-repeat-window 3 --nade-skip`).
OLD_CONFIG_JSON = """{
  "alpha": null,
  "alpha_target": 1.5,
  "batch_size": 4,
  "bptt": 100,
  "cell": "rnn",
  "clip": 1.0,
  "dataset": "jsb",
  "device": "cpu",
  "dropout": 0.0,
  "epochs": 1,
  "eval_batch_size": 64,
  "hidden": 16,
  "init": "lae",
  "input_noise": 0.0,
  "lae_decay": 0.3,
  "lae_max_lag": null,
  "lae_max_radius": null,
  "lae_path": null,
  "lae_solver": "approx",
  "lr": 0.001,
  "lr_factor": 0.5,
  "lr_patience": 1,
  "max_seconds": null,
  "max_sequences": 16,
  "max_train_sequences": null,
  "min_lr": 1e-05,
  "momentum": 0.9,
  "nade_hidden": 8,
  "nade_repeat": true,
  "nade_repeat_window": 3,
  "nade_skip": true,
  "nade_vocab": 16,
  "optimizer": "adam",
  "output": "nade",
  "patience": 5,
  "readout_max_frames": 100000,
  "readout_ridge": 1.0,
  "readout_skip": false,
  "readout_skip_fit": true,
  "readout_start": "fit",
  "readout_steps": 20,
  "rec_radius": null,
  "relative_lr": false,
  "seed": 12,
  "warmup_steps": 0,
  "weight_decay": 0.0
}"""


def test_a_config_json_from_before_model_config_loads_and_is_written_back_the_same():
    data = json.loads(OLD_CONFIG_JSON)
    config = TrainConfig.from_dict(data)
    assert config.model == ModelConfig(hidden=16, output="nade", nade_hidden=8, nade_skip=True, nade_vocab=16,
                                       nade_repeat=True, nade_repeat_window=3)
    assert (config.dataset, config.init, config.seed, config.max_sequences) == ("jsb", "lae", 12, 16)
    assert config.to_dict() == {**data, "freeze_recurrent_epochs": 0, "vocab_fit_steps": 0,
                                 "nade_vocab_rank": 0}  # later fields: defaults
    nested = dataclasses.asdict(config)  # the settings of the network under "model"
    assert nested["model"]["nade_vocab"] == 16 and "nade_vocab" not in nested
    assert TrainConfig.from_dict(nested) == config
    with pytest.raises(LapMusicError, match=r"gives \['hidden'\] both in model and at the top level"):
        TrainConfig.from_dict({**nested, "hidden": 16})
    with pytest.raises(LapMusicError, match="model must be a JSON object of the network's settings"):
        TrainConfig.from_dict({**nested, "model": 16})


def test_flat_settings_fill_the_model_config_and_keep_the_defaults():
    config = TrainConfig.from_settings({"dataset": "bach", "hidden": 8, "output": "nade", "lr": 0.1})
    assert config.model == ModelConfig(hidden=8, output="nade") and config.lr == 0.1 and config.epochs == 20
    assert TrainConfig.from_settings({}) == TrainConfig()
    with pytest.raises(LapMusicError, match=r"unknown training config keys \['hiddne'\]"):
        TrainConfig.from_settings({"hiddne": 8})
    with pytest.raises(LapMusicError, match="invalid training config: hidden must be an integer from 1 to 4,096, "
                                            "not 0; lr must be positive"):
        TrainConfig.from_settings({"hidden": 0, "lr": 0.0}).validate()


def test_length_batches_cover_every_piece_once_with_similar_lengths():
    lengths = [5, 50, 6, 51, 7, 52, 8, 53]
    batches = length_batches(lengths, 4, np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(8))
    spreads = sorted(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
    assert spreads == [3, 3]  # short pieces together, long pieces together


def test_training_lowers_the_loss_and_writes_the_run_folder(tmp_path, dataset):
    final = train(small_config(epochs=6), tmp_path / "run", dataset=dataset)
    history = read_history(tmp_path / "run")
    assert [h["epoch"] for h in history] == list(range(7))  # epoch 0 = the initial network
    assert history[-1]["valid_nll"] < 0.5 * history[0]["valid_nll"]
    assert history[-1]["train_nll"] < history[1]["train_nll"]
    for line in history:
        assert {"epoch", "train_nll", "valid_nll", "valid_acc", "seconds", "lr"} <= set(line)
    status = read_status(tmp_path / "run")
    assert status["state"] == "finished" and status["error"] is None and status["fraction"] == 1.0
    on_disk = json.loads((tmp_path / "run" / "final.json").read_text())
    assert on_disk == json.loads(json.dumps(final))
    assert {"nll", "acc", "expected_acc", "epochs", "seconds", "device"} <= set(final)
    assert final["resources"]["peak_rss_mb"] > 0 and final["resources"]["cpu_user_s"] > 0
    assert final["best_valid_nll"] == min(h["valid_nll"] for h in history)
    for name in ("config.json", "checkpoint.pt", "best.pt", "metrics.jsonl"):
        assert (tmp_path / "run" / name).exists()


def test_evaluate_matches_metrics_computed_piece_by_piece(dataset):
    torch.manual_seed(0)
    model = PianoRollRNN.from_config(ModelConfig(10)).eval()
    pieces = dataset.test
    probs, targets = [], []
    with torch.no_grad():
        for piece in pieces:
            logits, _ = model(torch.as_tensor(piece[:-1], dtype=torch.float32)[None])
            probs.append(torch.sigmoid(logits[0]).double().numpy())
            targets.append(piece[1:])
    probs, targets = np.concatenate(probs), np.concatenate(targets)
    result = evaluate(model, pieces)
    assert result["frames"] == sum(len(p) - 1 for p in pieces)
    assert result["nll"] == pytest.approx(nll(probs, targets), rel=1e-5)
    assert result["acc"] == pytest.approx(accuracy(probs, targets), abs=1e-6)
    assert result["expected_acc"] == pytest.approx(expected_accuracy(probs, targets), rel=1e-5)
    # Windows carry the state: 3-frame windows give the same numbers as whole pieces.
    tensors = [torch.as_tensor(p) for p in pieces]
    assert evaluate_tensors(model, tensors, window=3)["nll"] == pytest.approx(result["nll"], rel=1e-5)


def test_train_epoch_loss_is_the_nll_of_every_frame_once(dataset):
    # With lr = 0 nothing changes, so the epoch's training NLL (windows of 5 frames, batches of 4 pieces of
    # different lengths, rows dropping out as pieces end) must equal the NLL evaluated piece by piece.
    torch.manual_seed(1)
    model = PianoRollRNN.from_config(ModelConfig(10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    tensors = [torch.as_tensor(p) for p in dataset.train]
    result = train_epoch(model, optimizer, tensors, batch_size=4, bptt=5, clip=None,
                                      rng=np.random.default_rng(0))
    reference = evaluate(model.eval(), dataset.train)
    assert result["frames"] == reference["frames"] == sum(len(p) - 1 for p in dataset.train)
    assert result["nll"] == pytest.approx(reference["nll"], rel=1e-5)


def _weights(run_dir):
    payload = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    return payload["epoch"], payload["model"]


def test_resume_continues_from_the_saved_epoch_and_matches_an_uninterrupted_run(tmp_path, dataset):
    train(small_config(epochs=4, dropout=0.2), tmp_path / "whole", dataset=dataset)
    train(small_config(epochs=2, dropout=0.2), tmp_path / "split", dataset=dataset)
    assert _weights(tmp_path / "split")[0] == 2
    final = train(small_config(epochs=4, dropout=0.2), tmp_path / "split", dataset=dataset, resume=True)
    assert final["epochs"] == 4
    assert [h["epoch"] for h in read_history(tmp_path / "split")] == [0, 1, 2, 3, 4]
    epoch_whole, whole = _weights(tmp_path / "whole")
    epoch_split, split = _weights(tmp_path / "split")
    assert epoch_whole == epoch_split == 4
    for name in whole:  # same batches, optimizer state, dropout RNG: the same network
        assert torch.allclose(whole[name], split[name], atol=1e-6), name
    with pytest.raises(LapMusicError, match="only epochs, patience and max_seconds"):
        train(small_config(epochs=6, lr=0.5), tmp_path / "split", dataset=dataset, resume=True)
    with pytest.raises(LapMusicError, match="already holds a run"):
        train(small_config(), tmp_path / "split", dataset=dataset)


def test_a_run_folder_saved_before_the_heads_shared_one_name_resumes(tmp_path, dataset):
    """Checkpoints written before the output layer was ``model.head`` name its weights ``nade.*`` (``readout.*``,
    ``skip.*`` for the Bernoulli head): a resume loads them and continues the same run."""
    recipe = dict(output="nade", nade_hidden=4, nade_vocab=6, nade_repeat=True, nade_repeat_window=3)
    whole = train(small_config(epochs=3, **recipe), tmp_path / "whole", dataset=dataset)
    train(small_config(epochs=2, **recipe), tmp_path / "old", dataset=dataset)
    for name in ("checkpoint.pt", "best.pt"):
        payload = torch.load(tmp_path / "old" / name, weights_only=True)
        payload["model"] = {key.replace("head.", "nade.", 1): value for key, value in payload["model"].items()}
        torch.save(payload, tmp_path / "old" / name)
    resumed = train(small_config(epochs=3, **recipe), tmp_path / "old", dataset=dataset, resume=True)
    assert resumed["epochs"] == 3 and resumed["nll"] == pytest.approx(whole["nll"], rel=1e-6)
    assert resumed["best_valid_nll"] == pytest.approx(whole["best_valid_nll"], rel=1e-6)


def test_time_budget_stops_after_the_epoch_that_spends_it_and_resume_can_extend_it(tmp_path, dataset):
    # Any epoch takes more than a nanosecond: the budget is spent by epoch 1, whatever the machine's speed.
    final = train(small_config(epochs=4, max_seconds=1e-9), tmp_path / "run", dataset=dataset)
    assert final["stopped"] == "time budget" and final["epochs"] == 1 and final["nll"] is not None
    assert [h["epoch"] for h in read_history(tmp_path / "run")] == [0, 1]
    # The spent seconds are kept in the checkpoint: a larger budget on resume continues the same run.
    final = train(small_config(epochs=4, max_seconds=1e6), tmp_path / "run", dataset=dataset, resume=True)
    assert final["stopped"] == "epochs" and final["epochs"] == 4
    with pytest.raises(LapMusicError, match="max_seconds must be positive"):
        small_config(max_seconds=0.0).validate()


def test_cancel_keeps_the_last_checkpoint_and_resume_finishes(tmp_path, dataset):
    cancel = threading.Event()

    def progress(fraction, message):
        if message.startswith("epoch 3/"):  # during epoch 3: epochs 0..2 are saved
            cancel.set()

    result = train(small_config(epochs=5), tmp_path / "run", dataset=dataset, progress=progress, cancel=cancel)
    assert result["state"] == "cancelled"
    status = read_status(tmp_path / "run")
    assert status["state"] == "cancelled" and status["epoch"] == 2
    assert _weights(tmp_path / "run")[0] == 2
    assert not (tmp_path / "run" / "final.json").exists()
    run = load_run(tmp_path / "run")  # the kept model is usable
    assert run.final is None and run.status["state"] == "cancelled"
    final = train(None, tmp_path / "run", dataset=dataset, resume=True)
    assert final["state"] == "finished" and final["epochs"] == 5
    assert read_status(tmp_path / "run")["state"] == "finished"


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path, dataset):
    config = small_config(optimizer="sgd", lr=1e38, clip=None, momentum=0.0)
    with pytest.raises(TrainingDiverged, match="NaN/inf"):
        train(config, tmp_path / "run", dataset=dataset)
    status = read_status(tmp_path / "run")
    assert status["state"] == "failed" and "NaN/inf" in status["error"]
    epoch, state = _weights(tmp_path / "run")
    assert epoch == 0 and all(torch.isfinite(v).all() for v in state.values())
    assert load_run(tmp_path / "run").epoch == 0


def test_lae_init_starts_far_ahead_of_random_init(tmp_path, dataset):
    lae_final = train(small_config(init="lae", epochs=1), tmp_path / "lae", dataset=dataset)
    random_final = train(small_config(init="random", epochs=1), tmp_path / "random", dataset=dataset)
    lae_start = read_history(tmp_path / "lae")[0]["valid_nll"]
    random_start = read_history(tmp_path / "random")[0]["valid_nll"]
    assert lae_start < 0.5 * random_start  # the readout is fitted before any gradient step
    assert 0 < lae_final["pretrain"]["alpha"] and lae_final["pretrain_seconds"] > 0
    assert random_final["pretrain_seconds"] == 0.0
    run = load_run(tmp_path / "lae")
    assert run.lae is not None and run.lae.A.shape == (12, 88)


def test_load_run_refuses_missing_corrupt_and_foreign_checkpoints(tmp_path, dataset):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_run(tmp_path / "empty")
    train(small_config(epochs=1), tmp_path / "run", dataset=dataset)
    best = tmp_path / "run" / "best.pt"
    best.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_run(tmp_path / "run")
    torch.save({"weights": torch.zeros(3)}, best)
    with pytest.raises(CheckpointError, match="not a lapmusic checkpoint"):
        load_run(tmp_path / "run")
    torch.save(SimpleNamespace(evil=True), best)  # arbitrary objects: weights_only refuses them
    with pytest.raises(CheckpointError, match="which could run code"):
        load_run(tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    torch.save({"format": CHECKPOINT_FORMAT, "version": 1, "epoch": 0,
                "model": PianoRollRNN.from_config(ModelConfig(5)).state_dict()}, best)
    with pytest.raises(CheckpointError, match="does not match"):
        load_run(tmp_path / "run")
    assert config["hidden"] == 12


def test_load_run_gives_an_eval_model_the_sampler_can_step(tmp_path, dataset):
    train(small_config(epochs=2), tmp_path / "run", dataset=dataset)
    run = load_run(tmp_path / "run", device="cpu")
    assert not run.model.training and run.device == torch.device("cpu")
    assert len(run.history) == 3 and run.final["epochs"] == 2 and run.status["state"] == "finished"
    x = torch.zeros(1, 1, 88)
    logits, h = run.model(x)
    logits2, _ = run.model(x, h)
    assert logits.shape == logits2.shape == (1, 1, 88)
    assert evaluate(run, dataset.test)["nll"] == pytest.approx(run.final["nll"], rel=1e-6)


def test_cli_train_evaluate_compare(tmp_path, dataset, monkeypatch, capsys):
    monkeypatch.setattr(build_module, "load_run_dataset", lambda key: dataset)
    common = ["--dataset", "jsb", "--hidden", "8", "--epochs", "2", "--device", "cpu", "--batch-size", "6",
              "--lr", "0.01"]
    assert cli.main(["train", *common, "--init", "random", "--out", str(tmp_path / "run"), "--json"]) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert trained["state"] == "finished" and trained["epochs"] == 2

    assert cli.main(["evaluate", str(tmp_path / "run"), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(evaluated) >= {"nll", "acc", "expected_acc", "frames", "baselines"}
    assert set(evaluated["baselines"]) == {"copy_previous_acc", "marginal_nll"}
    assert evaluated["nll"] == pytest.approx(trained["nll"], rel=1e-6)

    # A setting the resume would not apply is refused by name, and nothing is trained.
    assert cli.main(["train", "--resume", str(tmp_path / "run"), "--epochs", "3", "--lr", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--lr cannot change" in err and "--epochs" in err and "--hidden" not in err
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 3
    assert cli.main(["train", "--resume", str(tmp_path / "run"), "--epochs", "3", "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert resumed["epochs"] == 3

    assert cli.main(["train", "--hidden", "8", "--out", str(tmp_path / "x")]) == 2
    assert "--dataset" in capsys.readouterr().err

    out = tmp_path / "compare"
    assert cli.main(["compare", *common, "--seeds", "2", "--out", str(out), "--json"]) == 0
    printed = capsys.readouterr()
    summary = json.loads(printed.out.strip().splitlines()[-1])
    assert f"run folders go under {out.resolve()}" in printed.err and summary["out"] == str(out)
    assert summary["runs"] == 4 and set(summary["inits"]) == {"lae", "random"}
    assert summary["inits"]["lae"]["nll"]["n"] == 2
    assert len(summary["epochs_to_reach_random_best"]["per_seed"]) == 2
    # A second call reuses the finished runs and prints the same table.
    assert cli.main(["compare", *common, "--seeds", "2", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "lae" in table and "random" in table and "+-" in table


def test_compare_runs_epochs_to_reach(tmp_path):
    def fake_run(name, init, seed, curve):
        run_dir = tmp_path / name
        run_dir.mkdir()
        (run_dir / "config.json").write_text(json.dumps(small_config(init=init, seed=seed).to_dict()))
        (run_dir / "metrics.jsonl").write_text(
            "".join(json.dumps({"epoch": e, "valid_nll": v}) + "\n" for e, v in enumerate(curve)))
        (run_dir / "final.json").write_text(json.dumps({"nll": curve[-1], "best_valid_nll": min(curve)}))
        return run_dir

    dirs = [fake_run("l0", "lae", 0, [5, 4, 3, 2]), fake_run("r0", "random", 0, [9, 6, 4, 3.5]),
            fake_run("l1", "lae", 1, [5, 4.5, 4.2, 4.1]), fake_run("r1", "random", 1, [9, 7, 5, 4])]
    summary = compare_runs(dirs)
    # Seed 0: random's best 3.5, LAE reaches it at epoch 2. Seed 1: random's best 4.0, never reached.
    assert summary["epochs_to_reach_random_best"]["per_seed"] == [{"seed": 0, "epoch": 2}, {"seed": 1, "epoch": None}]
    assert summary["epochs_to_reach_random_best"]["reached"] == "1/2"
    assert summary["inits"]["lae"]["nll"]["mean"] == pytest.approx(3.05)
    assert summary["inits"]["lae"]["nll"]["std"] == pytest.approx(np.std([2, 4.1], ddof=1))
    assert summary["valid_curve"]["lae"] == [5, 4.25, 3.6, 3.05]
    assert summary["best_so_far_curve"]["random"] == [9, 6.5, 4.5, 3.75]
    assert summary["lae_better_at_equal_epochs"] is True
    # A random run that goes on after the LAE run stopped and ends lower: the LAE is no longer ahead.
    dirs.append(fake_run("r2", "random", 2, [9, 6, 4, 3, 1.0]))
    assert compare_runs(dirs)["lae_better_at_equal_epochs"] is False


def test_a_saved_lae_can_be_reused(tmp_path, dataset):
    train(small_config(init="lae", epochs=1), tmp_path / "first", dataset=dataset)
    reused = train(small_config(init="lae", epochs=1, lae_path=str(tmp_path / "first" / "lae.npz")),
                   tmp_path / "second", dataset=dataset)
    assert reused["pretrain"]["lae_reused"] is True
    # Same LAE, same seed: the same initial network.
    assert read_history(tmp_path / "second")[0]["valid_nll"] == pytest.approx(
        read_history(tmp_path / "first")[0]["valid_nll"], rel=1e-6)
    with pytest.raises(LapMusicError, match="must be equal"):
        train(small_config(init="lae", hidden=5, lae_path=str(tmp_path / "first" / "lae.npz")),
              tmp_path / "third", dataset=dataset)


def test_relative_lr_scales_each_matrix_by_its_initial_size(tmp_path, dataset):
    config = small_config(init="lae", epochs=2, relative_lr=True, lr=1e-3)
    train(config, tmp_path / "lae", dataset=dataset)
    groups = {g["name"]: g for g in torch.load(tmp_path / "lae" / "checkpoint.pt", weights_only=True)["optimizer"]["param_groups"]}
    lae = load_run(tmp_path / "lae").lae
    reference = 1 / np.sqrt(3 * 12)
    alpha = json.loads((tmp_path / "lae" / "final.json").read_text())["pretrain"]["alpha"]
    expected = np.sqrt(np.mean((alpha * lae.A) ** 2)) / reference
    assert groups["recurrent.weight_ih_l0"]["lr_factor"] == pytest.approx(expected, rel=1e-4)
    assert groups["recurrent.bias_ih_l0"]["lr_factor"] == 1.0
    # PyTorch's default init has the reference RMS: the random init keeps (about) one learning rate.
    train(small_config(init="random", epochs=1, relative_lr=True), tmp_path / "random", dataset=dataset)
    factors = [g["lr_factor"] for g in torch.load(tmp_path / "random" / "checkpoint.pt",
                                                   weights_only=True)["optimizer"]["param_groups"]]
    assert all(0.8 < f < 1.2 for f in factors)
    # The factors survive a resume (they are not recomputed from the trained weights).
    train(small_config(init="lae", epochs=3, relative_lr=True, lr=1e-3), tmp_path / "lae", dataset=dataset,
          resume=True)
    resumed = {g["name"]: g for g in torch.load(tmp_path / "lae" / "checkpoint.pt", weights_only=True)["optimizer"]["param_groups"]}
    assert resumed["recurrent.weight_ih_l0"]["lr_factor"] == groups["recurrent.weight_ih_l0"]["lr_factor"]
    assert read_history(tmp_path / "lae")[-1]["lr"] == pytest.approx(1e-3)
