"""Queue estimates from the runs already measured: the same size, other sizes (scaled by the work of a frame),
other settings, early stopping, the time budget, and the ranges of the schedule."""

from __future__ import annotations

import json
import math
import time

import pytest

from lapmusic.core.io import atomic_write_json
from lapmusic.jobs import estimate
from lapmusic.jobs.estimate import Estimator, Measured, frame_work, predict
from lapmusic.jobs.job import Job


def config(**overrides):
    base = {"dataset": "bach", "hidden": 64, "init": "lae", "epochs": 4, "batch_size": 8, "patience": None,
            "output": "bernoulli", "cell": "rnn"}
    base.update(overrides)
    return base


def run(epoch, setup=10.0, done=4, finished=True, **overrides):
    return Measured(config(**overrides), epoch, setup, done, finished)


def write_run(folder, seconds, setup, state="finished", **overrides):
    atomic_write_json(folder / "config.json", config(**overrides))
    lines = [{"epoch": 0, "elapsed": setup}] + [{"epoch": n + 1, "seconds": s} for n, s in enumerate(seconds)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    atomic_write_json(folder / "status.json", {"state": state})


def test_frame_work_counts_the_weights_an_elman_network_multiplies_each_frame():
    pytest.importorskip("torch")
    from lapmusic.model.config import ModelConfig
    from lapmusic.model.rnn import PianoRollRNN

    for hidden in (8, 40):
        model = PianoRollRNN.from_config(ModelConfig(hidden=hidden))
        matrices = sum(p.numel() for p in model.parameters() if p.dim() >= 2)
        assert frame_work({"hidden": hidden}) == matrices


def test_measure_reads_median_epochs_setup_and_state(tmp_path):
    write_run(tmp_path / "a", [4.0, 6.0, 5.0], 20.0)
    write_run(tmp_path / "b", [], 20.0)  # no finished epoch: nothing measured
    (tmp_path / "c").mkdir()
    found = estimate.measure([tmp_path / n for n in "abc"])
    assert len(found) == 1
    assert (found[0].epoch_seconds, found[0].setup_seconds, found[0].epochs_done, found[0].finished) == (
        5.0, 20.0, 3, True)


def test_the_same_size_gives_setup_plus_epochs_within_the_load_spread():
    got = predict(config(epochs=10), [run(4.0, setup=20.0), run(6.0, setup=20.0), run(100.0, hidden=16)])
    assert got.basis == "same size" and got.point == pytest.approx(20.0 + 10 * 5.0)
    assert got.low == pytest.approx(got.point / estimate.LOAD_SPREAD)
    assert got.high == pytest.approx(got.point * estimate.LOAD_SPREAD)


def test_other_sizes_follow_the_power_law_fitted_on_the_measured_sizes():
    power = 0.7  # synthetic runs whose epoch time is exactly c * work ** 0.7; set-up 0 for a clean check
    runs = [run(0.001 * frame_work({"hidden": h}) ** power, setup=0.0, hidden=h) for h in (32, 128)]
    got = predict(config(hidden=64, epochs=3), runs)
    assert got.basis == "other sizes"
    assert got.point == pytest.approx(3 * 0.001 * frame_work({"hidden": 64}) ** power)
    assert got.low < got.point < got.high


def test_one_measured_size_scales_with_the_default_power_and_a_wide_range():
    got = predict(config(hidden=32, epochs=1), [run(10.0, setup=0.0, hidden=128)])
    ratio = frame_work({"hidden": 32}) / frame_work({"hidden": 128})
    assert got.point == pytest.approx(10.0 * ratio ** estimate.DEFAULT_POWER)
    lo, hi = estimate.POWER_RANGE
    assert got.low == pytest.approx(10.0 * ratio ** hi / estimate.LOAD_SPREAD)  # smaller network: high power, low time
    assert got.high == pytest.approx(10.0 * ratio ** lo * estimate.LOAD_SPREAD)


def test_other_settings_widen_the_range_and_nothing_measured_is_rough():
    other = predict(config(), [run(5.0, batch_size=32)])
    assert other.basis == "other settings" and other.high / other.low == pytest.approx(
        (estimate.LOAD_SPREAD * estimate.OTHER_SHAPE_SPREAD) ** 2)
    assert predict(config(), [run(5.0, dataset="nottingham")]).basis == "none"
    rough = predict(config(epochs=2), [])
    assert not rough.measured and rough.point == estimate.DEFAULT_SETUP_SECONDS + 2 * estimate.DEFAULT_EPOCH_SECONDS


def test_early_stopping_is_expected_where_similar_runs_stopped_and_the_budget_caps():
    runs = [run(2.0, setup=0.0, done=d, epochs=30, patience=5) for d in (8, 10, 12)]
    runs.append(run(2.0, setup=0.0, done=3, finished=False, epochs=30, patience=5))  # still running: no stop
    got = predict(config(epochs=30, patience=5), runs)
    assert got.point == pytest.approx(10 * 2.0)
    assert got.low == pytest.approx(8 * 2.0 / estimate.LOAD_SPREAD)
    assert got.high == pytest.approx(12 * 2.0 * estimate.LOAD_SPREAD)
    assert predict(config(epochs=30, patience=None), runs).point == pytest.approx(30 * 2.0)
    capped = predict(config(epochs=30, patience=None, max_seconds=7.0), runs)
    assert capped.point == pytest.approx(7.0 + 2.0)


def test_estimates_schedule_the_low_middle_and_high_durations(tmp_path):
    write_run(tmp_path / "done", [10.0, 10.0], 5.0)  # measured: 5 s + 2 x 10 s for this shape and size
    jobs = []
    for n in range(3):
        folder = tmp_path / f"q{n}"
        folder.mkdir()
        jobs.append(Job(run_dir=folder, config=config(epochs=2), key=None, submitted_at=time.time()))
    got = Estimator(tmp_path, dict).estimates([], jobs, slots=1)
    point = 5.0 + 2 * 10.0
    for n, job in enumerate(jobs):
        e = got[job.id]
        assert e["position"] == n + 1 and e["basis"] == "same size" and e["measured"]
        assert e["start_in"] == pytest.approx(n * point) and e["finish_in"] == pytest.approx((n + 1) * point)
        assert e["finish_range"][0] == pytest.approx((n + 1) * point / estimate.LOAD_SPREAD)
        assert e["finish_range"][1] == pytest.approx((n + 1) * point * estimate.LOAD_SPREAD)
        assert e["start_range"][0] <= e["start_in"] <= e["start_range"][1]
    assert all(math.isfinite(v) for e in got.values() for v in e["finish_range"])


def test_a_run_in_its_first_epoch_measures_its_epoch_time_from_its_progress(tmp_path):
    import os

    folder = tmp_path / "live"
    write_run(folder, [], 8.0, state="running", epochs=4)
    setup_ended = time.time() - 30.0
    os.utime(folder / "metrics.jsonl", (setup_ended, setup_ended))
    # 1.5 of 5 slots: the set-up slot and half of epoch 1, 30 s after the set-up ended: 60 s an epoch.
    atomic_write_json(folder / "status.json", {"state": "running", "fraction": 1.5 / 5})
    found = estimate.measure_run(folder, now=setup_ended + 30.0)
    assert found.epoch_seconds == pytest.approx(60.0) and found.setup_seconds == 8.0 and not found.finished
    atomic_write_json(folder / "status.json", {"state": "running", "fraction": 1.1 / 5})  # 10 % of an epoch
    assert estimate.measure_run(folder, now=setup_ended + 30.0) is None
    atomic_write_json(folder / "status.json", {"state": "running", "fraction": 0.5 / 5})  # still setting up
    assert estimate.measure_run(folder, now=setup_ended + 30.0) is None
