"""The command line's contract with a user: every option explains itself, and mistakes answer at once.

"At once" is checked without a clock: a mistaken name or path must be refused before torch is imported
(importing torch alone takes about a second on the project's machine) and before anything is written.
The answer times themselves are measured by ``benchmarks/bench_cli.py``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import random_rolls

from lapmusic.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
FLAGS = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction,
         argparse._CountAction, argparse._HelpAction, argparse._VersionAction)


def _subcommands(parser: argparse.ArgumentParser, prefix: str = ""):
    """(name, parser) of every subcommand, nested ones too (``datasets add``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", sub
                yield from _subcommands(sub, f"{prefix}{name} ")


def _shown(default, text: str) -> bool:
    """A default value appears in the help: as written, or item by item for a list (``[0]`` as "seed 0")."""
    if isinstance(default, (list, tuple)):
        return all(str(item) in text for item in default)
    return str(default) in text


def option_problems(parser: argparse.ArgumentParser) -> list[str]:
    """Every option of every subcommand without help, or whose help does not give its default.

    An option's help gives its default when it says "default" and, for a default other than None, shows
    that value; a required option or a positional argument needs help but no default; flags
    (store_true, ...) default to off and need help only.
    """
    problems = []
    for name, sub in _subcommands(parser):
        formatter = sub._get_formatter()
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            label = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if not action.help or action.help == argparse.SUPPRESS:
                problems.append(f"{label}: no help text")
                continue
            text = formatter._expand_help(action)
            if isinstance(action, FLAGS) or action.required or not action.option_strings:
                continue
            if "default" not in text.lower() and "required" not in text.lower():
                problems.append(f"{label}: help does not give the default ({text!r})")
            elif action.default is not None and not _shown(action.default, text):
                problems.append(f"{label}: default {action.default!r} is not shown in {text!r}")
    return problems


def test_every_option_has_help_that_gives_its_default():
    assert option_problems(cli.build_parser()) == []


def test_the_walk_catches_an_option_without_help_or_default():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    p = sub.add_parser("x")
    p.add_argument("--silent", type=int)
    p.add_argument("--hidden-default", type=int, default=7, help="a number")
    p.add_argument("--wrong-default", type=int, default=7, help="a number (default 8)")
    p.add_argument("--fine", type=int, default=7, help="a number (default %(default)s)")
    p.add_argument("--seeds", default=[0, 1], help="seeds (default 0 and 1)")
    p.add_argument("--wrong-list", default=[0, 2], help="seeds (default 0 and 1)")
    p.add_argument("--flag", action="store_true", help="a flag")
    nested = p.add_subparsers().add_parser("y")
    nested.add_argument("--deep", type=int, default=3, help="a number")
    problems = option_problems(parser)
    assert [problem.split(":")[0] for problem in problems] == [
        "x --silent", "x --hidden-default", "x --wrong-default", "x --wrong-list", "x y --deep"]


def python_path() -> str:
    """This checkout first, then whatever PYTHONPATH held (scripts/gpu_check.sh puts carried wheels there)."""
    import os

    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def run_isolated(argv: list[str], tmp_path: Path) -> dict:
    """Run ``lapmusic.cli.main(argv)`` in a fresh interpreter; report its exit code, stderr and heavy imports."""
    script = (
        "import contextlib, io, json, sys\n"
        "from lapmusic.cli.main import main\n"
        "err = io.StringIO()\n"
        "with contextlib.redirect_stderr(err):\n"
        f"    code = main({argv!r})\n"
        "print(json.dumps({'code': code, 'err': err.getvalue(),\n"
        "                  'heavy': sorted(m for m in ('torch', 'streamlit', 'music21', 'plotly') if m in sys.modules)}))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "LAPMUSIC_CACHE_DIR": str(tmp_path / "cache"),
           "LAPMUSIC_RUNS_DIR": str(tmp_path / "runs"), "PYTHONPATH": python_path()}
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                               cwd=tmp_path, timeout=120)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def fake_run_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text("{}")  # enough to pass the cheap check; never loaded
    return folder


@pytest.mark.parametrize(
    "argv, words",
    [
        (["train", "--dataset", "foo", "--hidden", "8", "--out", "new"], "unknown dataset 'foo'"),
        (["train", "--dataset", "user:nothing", "--hidden", "8", "--out", "new"], "no user dataset"),
        (["train", "--dataset", "jsb", "--hidden", "8", "--out", "new", "--device", "gpu"], "unknown device"),
        (["train", "--dataset", "jsb", "--hidden", "8", "--out", "new", "--lae-file", "nope.npz"],
         "LAE file nope.npz does not exist"),
        (["train", "--resume", "missing"], "run folder missing does not exist"),
        (["evaluate", "missing"], "run folder missing does not exist"),
        (["evaluate", "."], "has no config.json"),
        (["lae", "--dataset", "foo", "--hidden", "8", "--out", "new"], "unknown dataset 'foo'"),
        (["compare", "--dataset", "foo", "--hidden", "8", "--out", "new"], "unknown dataset 'foo'"),
        (["generate", "missing", "--out", "new"], "run folder missing does not exist"),
        (["generate", "RUN", "--out", "new", "--wav", "new.wav", "--soundfont", "/nope.sf2"],
         "soundfont /nope.sf2 does not exist"),
    ],
)
def test_mistakes_answer_before_torch_is_imported_and_write_nothing(argv, words, tmp_path):
    run = fake_run_folder(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_isolated([str(run) if a == "RUN" else a for a in argv], tmp_path)
    assert result["code"] == 2
    assert result["err"].strip().splitlines()[-1].startswith("error: ") and words in result["err"]
    assert result["heavy"] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no "new", no "runs" folder


@pytest.mark.parametrize(
    "extra, words",
    [(["--nade-skip"], "--nade-skip needs --output nade"), (["--cell", "gru"], "--init lae needs --cell rnn")],
)
def test_a_bad_combination_of_options_is_named_by_its_options(extra, words, tmp_path):
    """The config's check says ``nade_skip needs output 'nade'``; on the command line it names the options."""
    result = run_isolated(["train", "--dataset", "jsb", "--hidden", "8", "--out", "new", *extra], tmp_path)
    assert result["code"] == 2
    last = result["err"].strip().splitlines()[-1]
    assert last.startswith("error: ") and words in last and "nade_skip" not in last
    assert not (tmp_path / "new").exists()


def test_help_answers_without_heavy_imports(tmp_path):
    script = ("import sys\nfrom lapmusic.cli.main import build_parser\nbuild_parser().format_help()\n"
              "print(sorted(m for m in ('torch', 'numpy', 'streamlit', 'music21') if m in sys.modules))")
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                               env={"PATH": "/usr/bin:/bin", "PYTHONPATH": python_path()}, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


def test_lae_writes_npz_and_one_json_line(tmp_path, monkeypatch, capsys):
    from lapmusic.data import registry
    from lapmusic.data.dataset import Dataset

    pieces = random_rolls(12, (3, 20), seed=15, density=0.15)
    fake = Dataset("fake", "Fake set", pieces, pieces[:2], pieces[:2])
    monkeypatch.setattr(registry, "load_dataset", lambda key, progress=None: fake)  # a real key: the CLI checks it
    out = tmp_path / "lae.npz"
    code = cli.main(["lae", "--dataset", "jsb", "--hidden", "6", "--max-sequences", "5",
                     "--solver", "exact", "--out", str(out), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["solver"] == "exact" and result["p"] == 6 and result["pieces"] == 5
    assert result["rows"] == sum(len(x) for x in pieces[:5])
    assert 0 < result["energy_captured"] <= 1 and result["seconds"] >= 0
    # training's LAE: 23 lags (0.3**23 < 1e-12 < 0.3**22), or fewer when no piece is that long
    assert result["decay"] == 0.3 and result["max_lag"] == min(23, max(len(x) for x in pieces[:5]))
    with np.load(out, allow_pickle=False) as saved:
        assert saved["A"].shape == (6, 88) and saved["B"].shape == (6, 6)
        np.testing.assert_allclose(saved["singular_values"][:3], result["top_singular_values"][:3])
    # a user mistake is one line on stderr and exit code 2
    assert cli.main(["lae", "--dataset", "jsb", "--hidden", "5000", "--max-sequences", "1"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: p=5000")
