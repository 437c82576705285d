"""scripts/evaluate_sweeps.py: the table of a sweep's runs from their folders and kept evaluations (no training,
no evaluation run): means over seeds, the reason each run stopped, and the LAE-ahead verdict over the epochs that
every run reached, each against a direct computation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def script():
    return load_script("scripts/evaluate_sweeps.py")


def fake_run(sweep: Path, init: str, seed: int, curve: list[float], *, finished: bool, test=None) -> Path:
    """A run folder as the worker leaves it (config, metrics, status, final when finished) and, with ``test``
    ``(nll, nll_first_frame_scored)``, the kept answer of ``lapmusic evaluate`` for its best epoch."""
    run = sweep / "runs" / f"init={init}_s{seed}"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"dataset": "jsb", "init": init, "seed": seed}))
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e, "train_nll": v + 0.1, "valid_nll": v, "seconds": 0.0 if e == 0 else 2.0}) + "\n"
        for e, v in enumerate(curve)))
    (run / "status.json").write_text(json.dumps({"state": "finished" if finished else "cancelled"}))
    best = int(np.argmin(curve))
    if finished:
        (run / "final.json").write_text(json.dumps({"stopped": "time budget", "nll": test[0] if test else None}))
    if test is not None:
        (sweep / "evaluate").mkdir(exist_ok=True)
        (sweep / "evaluate" / f"{run.name}.json").write_text(json.dumps(
            {"epoch": best, "nll": test[0], "nll_first_frame_scored": test[1], "frames": 10,
             "baselines": {"marginal_nll": 11.0}}))
    return run


def test_table_from_two_inits(script, tmp_path):
    sweep = tmp_path / "jsb"
    lae = [[7.0, 6.0, 5.5, 5.4], [7.2, 6.1, 5.6, 5.5], [7.1, 6.2, 5.7]]  # the third was cancelled at epoch 2
    rnd = [[60.0, 8.0, 6.0, 5.3], [61.0, 8.2, 6.4, 5.2], [60.5, 8.1, 6.3, 5.6]]
    tests = {("lae", 7): (5.1, 5.2), ("lae", 8): (5.3, 5.4), ("random", 7): (5.0, 5.05), ("random", 8): (5.2, 5.3),
             ("random", 9): (5.4, 5.5)}  # lae seed 9 has no kept evaluation
    for init, curves in (("lae", lae), ("random", rnd)):
        for seed, curve in zip((7, 8, 9), curves):
            fake_run(sweep, init, seed, curve, finished=not (init == "lae" and seed == 9),
                     test=tests.get((init, seed)))
    runs = script.run_folders([sweep])
    answers = {run: script.cached(run, script.best_of(script.read_history(run))[1]) for run in runs}
    rows = [script.run_row(run, answers[run]) for run in runs]
    table = script.tabulate(rows)

    by = {(g["init"]): g for g in table["groups"]}
    assert by["lae"]["test_nll"]["mean"] == pytest.approx(5.2) and by["lae"]["test_nll"]["n"] == 2
    assert by["lae"]["test_nll"]["std"] == pytest.approx(np.std([5.1, 5.3], ddof=1))
    assert by["random"]["test_nll_first_frame_scored"]["mean"] == pytest.approx(np.mean([5.05, 5.3, 5.5]))
    assert by["random"]["best_valid_nll"]["mean"] == pytest.approx(np.mean([5.3, 5.2, 5.6]))
    assert by["lae"]["epochs"]["mean"] == pytest.approx(np.mean([3, 3, 2]))
    assert sorted(by["lae"]["stopped"]) == ["cancelled (stop time)", "time budget", "time budget"]
    assert by["lae"]["marginal_nll"] == 11.0

    # Compared over epochs 0-2 only (the cancelled run's last): best-so-far means there.
    lae_mean = np.mean([np.minimum.accumulate(c[:3]) for c in lae], axis=0)
    rnd_mean = np.mean([np.minimum.accumulate(c[:3]) for c in rnd], axis=0)
    assert (lae_mean < rnd_mean).all()  # at epoch 3 random would be ahead: it must not be looked at
    assert table["ahead"]["jsb"] == {"epochs_compared": 2, "every_epoch": True, "first_behind": None, "runs": [3, 3]}

    text = script.markdown(rows, table)
    assert "| JSB Chorales | lae | 5.200 ± 0.141 (n = 2) |" in text
    assert "| JSB Chorales | yes | 0-2 | 3 + 3 |" in text


def test_ahead_names_the_first_epoch_behind(script):
    lae = [{"valid_curve": [7.0, 6.0, 5.9, 5.8], "stopped": "epochs"}]
    rnd = [{"valid_curve": [60.0, 6.5, 5.7, 5.9], "stopped": "epochs"}]
    assert script.ahead(lae, rnd) == {"epochs_compared": 3, "every_epoch": False, "first_behind": 2, "runs": [1, 1]}
    # A run cancelled before its first epoch has no curve: left out, not a reason to give no verdict.
    assert script.ahead(lae + [{"valid_curve": [], "stopped": "cancelled"}], rnd)["runs"] == [1, 1]
    assert script.ahead(lae, [{"valid_curve": [], "stopped": "cancelled"}])["every_epoch"] is None


def test_an_early_stopped_run_keeps_its_best_to_the_end(script):
    # The LAE run stopped early at epoch 2 with 5.0; random, still at the cap, reaches 4.9 at epoch 4.
    lae = [{"valid_curve": [7.0, 5.0, 5.1], "stopped": "early stopping"}]
    rnd = [{"valid_curve": [60.0, 6.0, 5.5, 5.2, 4.9], "stopped": "epochs"}]
    assert script.ahead(lae, rnd) == {"epochs_compared": 4, "every_epoch": False, "first_behind": 4, "runs": [1, 1]}
    # Cut by a time budget instead, it says nothing after epoch 2: compared there only, and ahead.
    lae[0]["stopped"] = "time budget"
    assert script.ahead(lae, rnd) == {"epochs_compared": 2, "every_epoch": True, "first_behind": None, "runs": [1, 1]}
    # Both early-stopped: compared to the longer run's last epoch, the shorter's mean carried forward.
    lae = [{"valid_curve": [7.0, 5.0, 5.1], "stopped": "early stopping"},
           {"valid_curve": [7.0, 5.2, 5.0, 5.1, 5.3, 5.4], "stopped": "early stopping"}]
    rnd = [{"valid_curve": [60.0, 6.0, 5.5, 5.2], "stopped": "early stopping"}] * 2
    verdict = script.ahead(lae, rnd)
    assert verdict["epochs_compared"] == 5
    assert verdict["every_epoch"] is True  # LAE 5.0 at the end against random's 5.2 carried forward


def test_cached_answer_of_another_epoch_is_not_used(script, tmp_path):
    run = fake_run(tmp_path / "s", "lae", 7, [7.0, 6.0, 6.5], finished=True, test=(5.0, 5.1))
    assert script.cached(run, 1)["nll"] == 5.0
    assert script.cached(run, 2) is None  # the run went on and found another best model: evaluate again


def test_refuses_a_folder_that_is_no_sweep(script, tmp_path, capsys):
    with pytest.raises(SystemExit):
        script.main([str(tmp_path), "--out", str(tmp_path / "t")])
    assert "no runs/ inside" in capsys.readouterr().err


def test_main_keeps_an_earlier_tables_evaluations(script, tmp_path):
    """The GPU machine's table carries its evaluations: tabulating the unpacked folders again reuses them (no
    evaluation runs: a run without a kept answer and without best.pt has nothing to evaluate)."""
    sweep = tmp_path / "jsb"
    lae = fake_run(sweep, "lae", 7, [7.0, 6.0], finished=True)
    rnd = fake_run(sweep, "random", 7, [60.0, 6.5], finished=True)
    earlier = {"evaluations": {str(lae): {"epoch": 1, "nll": 5.5, "nll_first_frame_scored": 5.6},
                               str(rnd): {"epoch": 0, "nll": 9.9, "nll_first_frame_scored": 9.9}}}  # stale: best is 1
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))
    assert script.main([str(sweep), "--out", str(tmp_path / "t"), "--kept", str(tmp_path / "earlier.json")]) == 0
    table = json.loads((tmp_path / "t.json").read_text())
    rows = {r["init"]: r for r in table["rows"]}
    assert rows["lae"]["test_nll"] == 5.5 and rows["lae"]["test_nll_first_frame_scored"] == 5.6
    assert rows["random"]["test_nll"] is None  # the earlier answer scored another epoch's model
    assert list(table["evaluations"]) == [str(lae)]


def test_a_model_left_unevaluated_is_named_so(script, tmp_path):
    run = fake_run(tmp_path / "s", "lae", 7, [7.0, 6.0], finished=True)
    assert script.run_row(run, None)["evaluate_error"] is None  # no best.pt: nothing to evaluate
    (run / "best.pt").write_bytes(b"")
    assert script.run_row(run, None)["evaluate_error"] == "not evaluated"
    assert script.main([str(tmp_path / "s"), "--out", str(tmp_path / "t"), "--no-evaluate"]) == 1
