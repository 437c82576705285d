"""``lapmusic sweep`` (local engine) on a tiny synthetic dataset: grid expansion, parallel runs, resume, the table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import load_script, random_rolls

from lapmusic.cli.main import main as cli_main
from lapmusic.data.dataset import Dataset
from lapmusic.data.user import save_user_dataset
from lapmusic.jobs.grid import cell_name, expand, parse_value

ROOT = Path(__file__).resolve().parent.parent


def sweep_main(argv) -> int:
    return cli_main(["sweep", *argv])


def test_expand_crosses_axes_and_variants_and_drops_lae_settings_for_random():
    cells = expand({"base": {"hidden": 4}, "axes": {"init": ["lae", "random"], "lae_max_lag": [3, None]},
                          "variants": [{}, {"dropout": 0.2}]})
    # lae: 2 lags x 2 variants; random: the lag is meaningless, so 1 x 2 variants.
    assert len(cells) == 6
    assert {"hidden": 4, "init": "random", "dropout": 0.2} in cells
    assert {"hidden": 4, "init": "lae", "lae_max_lag": None} in cells
    assert parse_value("null") is None and parse_value("1e-3") == 1e-3 and parse_value("lae") == "lae"
    assert cell_name({"hidden": 4, "init": "lae", "lae_max_lag": 3}, {"hidden": 4}) == "init=lae_lae_max_lag=3"
    # The readout skip applies to both inits; only its LAE pre-fit switch is dropped for random.
    cells = expand({"base": {"readout_skip": True}, "axes": {"init": ["lae", "random"],
                                                                   "readout_skip_fit": [True, False]}})
    assert {"readout_skip": True, "init": "random"} in cells and len(cells) == 3


def test_a_tiny_grid_runs_in_two_workers_resumes_and_writes_one_table(tmp_path, capsys):
    key = save_user_dataset(Dataset(key="user:sweep-test", name="sweep-test",
                                    train=random_rolls(12, (8, 20), seed=0, density=0.15),
                                    valid=random_rolls(4, (8, 20), seed=1, density=0.15),
                                    test=random_rolls(4, (8, 20), seed=2, density=0.15)))
    argv = ["--out", str(tmp_path), "--jobs", "2", "--seeds", "0,1", "--final",
            "--base", f"dataset={key}", "hidden=6", "epochs=2", "batch_size=4", "bptt=8", "device=cpu",
            "lae_solver=exact", "--axis", "init=lae,random"]
    assert sweep_main(argv) == 0
    table = json.loads((tmp_path / "sweep.json").read_text())
    assert len(table["cells"]) == 2 and all(cell["seeds"] == [0, 1] or sorted(cell["seeds"]) == [0, 1]
                                           for cell in table["cells"])
    # Mean +- std over seeds of each cell agree with the run folders.
    for cell in table["cells"]:
        values = [json.loads((Path(run) / "final.json").read_text())["best_valid_nll"] for run in cell["runs"]]
        assert cell["best_valid_nll"]["mean"] == pytest.approx(sum(values) / 2)
        assert cell["test_nll"]["mean"] is not None
    markdown = (tmp_path / "sweep.md").read_text()
    assert "best valid NLL" in markdown and "test NLL" in markdown and "±" in markdown
    # The LAE is fitted once per LAE setting and shared by the seeds.
    assert len(list((tmp_path / "lae").glob("*.npz"))) == 1
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/final.json")}
    assert len(stamps) == 4
    # A folder written before a setting existed (its config.json lacks the key) still counts as the same run.
    old = next(tmp_path.glob("runs/*/config.json"))
    config = json.loads(old.read_text())
    del config["readout_skip"]
    old.write_text(json.dumps(config))
    # A second call finds every run finished and only rewrites the table; without --final, no test columns.
    assert sweep_main([a for a in argv if a != "--final"]) == 0
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/final.json")} == stamps
    again = json.loads((tmp_path / "sweep.json").read_text())["cells"]
    assert sorted(len(cell["runs"]) for cell in again) == [2, 2]
    assert "test NLL" not in (tmp_path / "sweep.md").read_text()
    # The report draws the two figures per dataset and prints the equal-epoch table.
    pytest.importorskip("matplotlib")
    report = load_script("scripts/sweep_report.py")
    capsys.readouterr()
    assert report.main([str(tmp_path / "sweep.json"), "--img", str(tmp_path / "img"), "--prefix", "t", "--test"]) == 0
    printed = capsys.readouterr().out
    assert printed.count(f"| {key} |") == 4  # one line per cell: equal epochs, then test
    assert {p.name for p in (tmp_path / "img").iterdir()} == {f"t_curves_{key}.png", f"t_gap_{key}.png"}


def test_a_bad_setting_fails_before_any_run(tmp_path, capsys):
    assert sweep_main(["--out", str(tmp_path), "--base", "dataset=jsb", "readout_start=maybe"]) == 2
    assert "readout_start must be one of" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    assert sweep_main(["--out", str(tmp_path), "--gpus-per-run", "0.5"]) == 2
    assert "are Ray's: add --engine ray" in capsys.readouterr().err


def test_the_ray_engine_without_ray_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without the extra gives
    assert sweep_main(["--out", str(tmp_path), "--engine", "ray", "--base", "dataset=jsb", "epochs=1"]) == 2
    assert "Ray is not installed: pip install 'lapmusic[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
