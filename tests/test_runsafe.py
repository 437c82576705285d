"""Run folders under stress: kill -9 loops, one writer per folder, damaged folders, divergence, and configs
or checkpoints that were edited by hand. (Full and read-only disks: tests/test_disks.py.)"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import synthetic_config, synthetic_dataset

from lapmusic.cli import main as cli
from lapmusic.core.errors import CheckpointError
from lapmusic.core.lock import RunFolderBusy, lock_owner, run_lock
from lapmusic.jobs.runs import list_runs
from lapmusic.training import build as build_module
from lapmusic.training.config import TrainConfig
from lapmusic.training.epoch import TrainingDiverged
from lapmusic.training.results import load_run
from lapmusic.training.rundir import inspect_history, read_history, read_status
from lapmusic.training.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]
HOLD_LOCK = ("import sys, time; sys.path.insert(0, sys.argv[1]); from lapmusic.core.lock import run_lock\n"
             "with run_lock(sys.argv[2]):\n    print('locked', flush=True); time.sleep(60)\n")


@pytest.fixture(scope="module")
def dataset():
    return synthetic_dataset((16, 4, 4), (10, 30))


def small_config(**fields) -> TrainConfig:
    return synthetic_config(**{"hidden": 8, "init": "random", "epochs": 2, **fields})


def hold_lock_elsewhere(run_dir: Path) -> subprocess.Popen:
    """Another process holding ``run_dir``'s writer lock (until killed)."""
    process = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(ROOT), str(run_dir)], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def files_in(folder: Path) -> dict[str, bytes]:
    """Each file's bytes; the lock record without its heartbeat, which the holder renews on its own."""
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}
    if files.get(".lock", b"").strip():
        record = json.loads(files[".lock"])
        record.pop("heartbeat", None)
        files[".lock"] = json.dumps(record, sort_keys=True).encode()
    return files


# ------------------------------------------------------------------------------------------ kill -9 loop
def test_kill_9_at_random_moments_loses_and_duplicates_no_epoch(tmp_path):
    """10 SIGKILLs of real training processes at random moments, many inside writes (the write-pause hook);
    each resumed. No epoch lost or doubled, finished runs match an uninterrupted run epoch by epoch, no
    stray files. (benchmarks/bench_killloop.py runs the same loop with 100 kills.)"""
    spec = importlib.util.spec_from_file_location("bench_killloop", ROOT / "benchmarks" / "bench_killloop.py")
    sys.path.insert(0, str(ROOT / "benchmarks"))  # the forked workers import the module by name
    try:
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_killloop"] = module
        spec.loader.exec_module(module)
        counts = module.kill_loop(tmp_path, 10, seed=1, window=1.0, config={"epochs": 8})
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
        sys.modules.pop("bench_killloop", None)
    assert counts["kills"] == 10 and counts["runs_finished"] >= 1, counts
    assert {k: counts[k] for k in ("lost", "duplicated", "misaligned", "stray", "unclear")} == dict.fromkeys(
        ("lost", "duplicated", "misaligned", "stray", "unclear"), 0), counts


def test_resume_drops_metrics_lines_past_the_checkpoint_and_restores_best(tmp_path, dataset):
    run = tmp_path / "run"
    train(small_config(epochs=2), run, dataset=dataset)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    # a crash after the line of epoch 3 was written but before its checkpoint; best.pt lost its update
    (run / "metrics.jsonl").write_text("\n".join(lines + [json.dumps({**json.loads(lines[-1]), "epoch": 3})]) + "\n")
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    payload.update(best_epoch=2, best_valid_nll=1.0)  # the checkpoint claims epoch 2 is the best
    torch.save(payload, run / "checkpoint.pt")
    (run / ".checkpoint.pt.x1y2.tmp").write_bytes(b"half")  # a killed writer's temp file
    final = train(small_config(epochs=4), run, dataset=dataset, resume=True)
    assert [h["epoch"] for h in read_history(run)] == [0, 1, 2, 3, 4]
    assert final["epochs"] == 4
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["epoch"] == final["best_epoch"]


def test_resume_refuses_a_folder_whose_metrics_miss_a_checkpointed_epoch(tmp_path, dataset):
    run = tmp_path / "run"
    train(small_config(epochs=2), run, dataset=dataset)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(lines[0] + "\n" + lines[2] + "\n")  # epoch 1 gone
    with pytest.raises(CheckpointError, match=r"misses the lines of epochs \[1\]"):
        train(small_config(epochs=3), run, dataset=dataset, resume=True)
    assert read_status(run)["state"] == "failed"


def test_resume_refuses_a_lost_best_model_before_training(tmp_path, dataset):
    run = tmp_path / "run"
    train(small_config(epochs=2), run, dataset=dataset)
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    torch.save({**payload, "best_epoch": 1, "epoch": 2}, run / "checkpoint.pt")
    best = torch.load(run / "best.pt", weights_only=True)
    torch.save({**best, "epoch": 0}, run / "best.pt")  # not the epoch the checkpoint names
    with pytest.raises(CheckpointError, match=r"should hold the best model \(epoch 1\) but it holds epoch 0"):
        train(small_config(epochs=5), run, dataset=dataset, resume=True)
    (run / "best.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"should hold the best model \(epoch 1\) but .*corrupt"):
        train(small_config(epochs=5), run, dataset=dataset, resume=True)
    assert [h["epoch"] for h in read_history(run)] == [0, 1, 2]  # nothing trained


# ------------------------------------------------------------------------------------------ one writer
def test_a_second_writer_is_refused_before_writing_anything(tmp_path, dataset, monkeypatch, capsys):
    run = tmp_path / "run"
    holder = hold_lock_elsewhere(run)
    try:
        owner = lock_owner(run)
        assert owner["pid"] == holder.pid and owner["host"] == socket.gethostname()
        assert owner["since"] <= time.time()
        before = files_in(run)
        with pytest.raises(RunFolderBusy, match=rf"pid {holder.pid} on host .* since \d{{4}}-"):
            train(small_config(), run, dataset=dataset)
        monkeypatch.setattr(build_module, "load_run_dataset", lambda key: dataset)
        assert cli.main(["train", "--dataset", "jsb", "--hidden", "8", "--out", str(run)]) == 2
        assert f"pid {holder.pid}" in capsys.readouterr().err
        assert cli.main(["train", "--resume", str(run)]) == 2
        assert files_in(run) == before  # nothing written: no config.json, no status.json
    finally:
        holder.kill()
        holder.wait()
    # kill -9 left the owner in the file, but the kernel dropped the lock: stale, taken over
    assert json.loads((run / ".lock").read_text())["pid"] == holder.pid
    assert lock_owner(run) is None
    train(small_config(epochs=1), run, dataset=dataset)
    assert read_status(run)["state"] == "finished"
    assert (run / ".lock").read_text() == ""  # released


def test_the_lock_is_reentrant_in_a_thread_and_refuses_other_threads(tmp_path):
    refused = []
    with run_lock(tmp_path / "run") as lock:
        with run_lock(tmp_path / "run"):
            assert lock_owner(tmp_path / "run")["pid"] == os.getpid()

        def other():
            try:
                with run_lock(tmp_path / "run"):
                    pass
            except RunFolderBusy as exc:
                refused.append(str(exc))

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert lock.previous is None
    assert refused and "another job of this process" in refused[0]
    assert lock_owner(tmp_path / "run") is None


def test_a_forked_child_does_not_inherit_the_lock(tmp_path):
    with run_lock(tmp_path / "run"):
        pid = os.fork()
        if pid == 0:  # the child: refused like any other process, and the parent still owns the folder
            try:
                with run_lock(tmp_path / "run"):
                    os._exit(1)
            except RunFolderBusy:
                os._exit(0 if lock_owner(tmp_path / "run")["pid"] == os.getppid() else 2)
            except BaseException:
                os._exit(3)
        assert os.waitpid(pid, 0)[1] == 0
    assert lock_owner(tmp_path / "run") is None


# ------------------------------------------------------------------------------------------ damaged folders
def test_one_damaged_folder_does_not_hide_the_others(tmp_path, dataset):
    good = tmp_path / "runs" / "good"
    train(small_config(), good, dataset=dataset)
    bad_line = tmp_path / "runs" / "bad-line"
    train(small_config(), bad_line, dataset=dataset)
    with open(bad_line / "metrics.jsonl", "a") as handle:
        handle.write('{"epoch": "abc"}\n[1, 2]\n{"epoch": 1, "valid_nll": "x"}\nnot json\n')
    bad_config = tmp_path / "runs" / "bad-config"
    bad_config.mkdir()
    (bad_config / "config.json").write_text('{"dataset": "jsb", "hidden": "abc", "init": "lae", "epochs": 2}')
    garbage = tmp_path / "runs" / "garbage"
    garbage.mkdir()
    (garbage / "config.json").write_text("{not json")
    (garbage / "status.json").write_text('{"state": {"x": 1}}')

    rows, problems = inspect_history(bad_line)
    assert [r["epoch"] for r in rows] == [0, 1, 2] and len(problems) == 4
    runs = {r.name: r for r in list_runs(tmp_path / "runs")}
    assert set(runs) == {"good", "bad-line", "bad-config", "garbage"}
    assert runs["good"].state == runs["bad-line"].state == "finished" and runs["bad-line"].epochs_done == 2
    assert runs["bad-config"].state == "damaged" and "hidden is 'abc'" in runs["bad-config"].status["error"]
    assert runs["garbage"].state == "damaged" and "unreadable" in runs["garbage"].status["error"]
    # resuming the folder with bad lines recovers: they are dropped, every epoch is there
    train(small_config(epochs=3), bad_line, dataset=dataset, resume=True)
    assert inspect_history(bad_line) == (read_history(bad_line), [])
    assert [r["epoch"] for r in read_history(bad_line)] == [0, 1, 2, 3]
    with pytest.raises(CheckpointError, match="misses the keys"):
        train(None, bad_config, dataset=dataset, resume=True)


@pytest.mark.parametrize("edit, message", [
    ({"hidden": True}, "hidden must be an integer from 1 to 4,096, not True"),
    ({"hidden": 10**9}, "hidden must be an integer from 1 to 4,096"),
    ({"hidden": 1e9}, "hidden must be an integer from 1 to 4,096, not 1000000000.0"),
    ({"min_lr": "x"}, "min_lr must be non-negative and finite, not 'x'"),
    ({"weight_decay": float("nan")}, "weight_decay must be non-negative and finite"),
    ({"bptt": 2.5}, "bptt must be an integer"),
    ({"dataset": 3}, "dataset must be a string"),
    ({"lr": float("inf")}, "lr must be positive and finite"),
])
def test_hand_edited_configs_give_clear_errors_before_any_allocation(tmp_path, dataset, edit, message):
    run = tmp_path / "run"
    train(small_config(epochs=1), run, dataset=dataset)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, **edit}))
    with pytest.raises(CheckpointError, match=message):
        load_run(run)
    with pytest.raises(CheckpointError, match=message):
        train(None, run, dataset=dataset, resume=True)


def test_missing_config_keys_are_named_never_defaulted(tmp_path, dataset):
    run = tmp_path / "run"
    train(small_config(epochs=1), run, dataset=dataset)
    config = json.loads((run / "config.json").read_text())
    del config["dataset"], config["lr"]
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"misses the keys \['dataset', 'lr'\]"):
        load_run(run)


# ------------------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("edit, message", [
    (lambda p: p.pop("optimizer"), "optimizer is missing"),
    (lambda p: p.update(torch_rng=torch.zeros(3)), "torch_rng is not a random-generator state"),
    (lambda p: p.update(torch_rng="abc"), "torch_rng is str"),
    (lambda p: p.update(epoch="2"), "epoch is str"),
])
def test_a_damaged_checkpoint_gives_a_clear_resume_error(tmp_path, dataset, edit, message):
    run = tmp_path / "run"
    train(small_config(epochs=1), run, dataset=dataset)
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    edit(payload)
    torch.save(payload, run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=message):
        train(None, run, dataset=dataset, resume=True)
    assert message.split()[0] in read_status(run)["error"]


def test_the_weights_only_refusal_is_one_line_without_torchs_advice(tmp_path, dataset):
    run = tmp_path / "run"
    train(small_config(epochs=1), run, dataset=dataset)
    torch.save({"evil": os.system}, run / "best.pt")  # a pickle asking for a function
    with pytest.raises(CheckpointError, match="posix.system") as caught:
        load_run(run)
    text = str(caught.value)
    assert "\n" not in text and "weights_only=False" not in text and "posix.system" in text


def test_resume_after_a_kill_during_pre_training_says_to_start_again(tmp_path, dataset):
    run = tmp_path / "run"
    run.mkdir()
    config = small_config(init="lae")
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    (run / ".lae.npz.abc123.tmp").write_bytes(b"half an LAE")
    with pytest.raises(CheckpointError, match=r"no checkpoint: .*pre-training.* Start it again: `lapmusic train "
                                              r"--dataset synthetic --hidden 8 --init lae"):
        train(None, run, dataset=dataset, resume=True)
    assert cli.main(["train", "--resume", str(run)]) == 2
    train(config, run, dataset=dataset)  # starting again in the same folder works and cleans up
    assert read_status(run)["state"] == "finished"
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------------ divergence
def test_an_absurd_learning_rate_is_stopped_by_the_divergence_guard(tmp_path, dataset):
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="diverged|NaN/inf") as caught:
        train(small_config(lr=1e6, epochs=3), run, dataset=dataset)
    status = read_status(run)
    assert status["state"] == "failed" and "lower --lr" in status["error"]
    assert "lower --lr" in str(caught.value)


def test_nan_weight_decay_is_a_clear_cli_error(tmp_path, capsys):
    assert cli.main(["train", "--dataset", "jsb", "--hidden", "8", "--weight-decay", "nan",
                     "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid training config: --weight-decay must be non-negative and finite")
    assert not (tmp_path / "run").exists()
