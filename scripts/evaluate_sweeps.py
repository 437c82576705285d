"""Evaluate every run of one or more sweeps on the test split (both NLL conventions) and write one table.

    python scripts/evaluate_sweeps.py SWEEP_DIR... --out PREFIX [--jobs 8] [--device cpu] [--deadline 90]

SWEEP_DIR is a ``lapmusic sweep --out`` folder: ``SWEEP_DIR/runs/CELL_sSEED`` holds one run each. Every run
folder with a ``best.pt`` is evaluated with ``lapmusic evaluate RUN --json`` (``--jobs`` processes at once), a
finished run or one stopped before its end (cancelled, killed: its best model so far); the answer is kept in
``SWEEP_DIR/evaluate/RUN.json`` and reused while the run's best epoch is the same. Then ``PREFIX.md`` and
``PREFIX.json``: per run, and per dataset and init (mean ± sample std over seeds), the test NLL with each
piece's first frame left out (``nll``, convention A) and scored (``nll_first_frame_scored``, convention B), the
best validation NLL and epoch, epochs run and why the run stopped; per dataset, whether the LAE start's
validation NLL of the best model so far (mean over seeds) is below the random start's at every epoch that every
run of both reached (a run cut by a time budget says nothing about the epochs after its last; one that ended
by early stopping keeps its best so far, carried forward).

``--kept TABLE.json``: take the evaluations an earlier call wrote into its table (e.g. on the GPU machine, with
the run folders unpacked at the same paths) as kept answers, so that only the runs it could not evaluate are
evaluated again. ``--deadline S``: start no evaluation after S seconds, end those still running at S, and write the table with
what was evaluated (the rest are listed as not evaluated). Exit status 1 when a run with a ``best.pt`` was
left without an evaluation (failed, ended, not started), else 0. Needs lapmusic and numpy (no plotting library).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sweep_report import NAMES, best_so_far  # noqa: E402

from lapmusic.core.io import atomic_write_json, read_json  # noqa: E402
from lapmusic.training.rundir import read_history  # noqa: E402


def run_folders(sweeps: list[Path]) -> list[Path]:
    """The run folders (those with a ``config.json``) of the sweep folders, in name order."""
    return [run for sweep in sweeps for run in sorted((sweep / "runs").glob("*")) if (run / "config.json").is_file()]


def cache_path(run: Path) -> Path:
    return run.parent.parent / "evaluate" / f"{run.name}.json"


def cached(run: Path, best_epoch: int | None) -> dict | None:
    """The kept evaluation of ``run`` if it scored the model of ``best_epoch``."""
    answer = read_json(cache_path(run)) if cache_path(run).is_file() else None
    return answer if answer and answer.get("epoch") == best_epoch else None


def keep(runs: list[Path], table: dict) -> None:
    """Write the evaluations of an earlier table (``"evaluations"``: run folder -> answer) as the kept answers of
    those ``runs`` that have none."""
    earlier = table.get("evaluations") or {}
    for run in runs:
        if str(run) in earlier and not cache_path(run).is_file():
            atomic_write_json(cache_path(run), earlier[str(run)])


def evaluate_all(runs: list[Path], jobs: int, device: str | None, deadline: float | None,
                 say=lambda line: print(line, file=sys.stderr)) -> dict[Path, dict]:
    """``lapmusic evaluate RUN --json`` for every run with a ``best.pt`` and no current kept answer.

    Parameters
    ----------
    runs : list of Path
        Run folders.
    jobs : int
        Evaluations at once.
    device : str or None
        ``--device`` for every evaluation (``None``: each run's own setting).
    deadline : float or None
        Seconds from now after which none starts and those running are ended.
    say : callable
        Receives one line per evaluation started, finished or ended.

    Returns
    -------
    dict
        Run folder -> the evaluation's JSON, or ``{"error": text}`` when it failed or was ended.
    """
    started = time.monotonic()
    answers: dict[Path, dict] = {}
    todo = []
    for run in runs:
        best = best_of(read_history(run))[1]
        if (answer := cached(run, best)) is not None:
            answers[run] = answer
        elif (run / "best.pt").is_file():
            todo.append(run)
    running: dict[Path, subprocess.Popen] = {}
    while todo or running:
        late = deadline is not None and time.monotonic() - started >= deadline
        while todo and len(running) < jobs and not late:
            run = todo.pop(0)
            argv = [sys.executable, "-m", "lapmusic.cli", "evaluate", str(run), "--json"]
            argv += ["--device", device] if device else []
            running[run] = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            say(f"evaluating {run}")
        if late:
            for run, process in running.items():
                process.kill()
                answers[run] = {"error": "ended at the deadline"}
            for run in todo:
                answers[run] = {"error": "not evaluated: the deadline came first"}
            say(f"deadline: {len(running)} evaluations ended, {len(todo)} not started")
            break
        for run, process in list(running.items()):
            if process.poll() is None:
                continue
            out, err = process.communicate()
            del running[run]
            lines = out.strip().splitlines()
            if process.returncode == 0 and lines:
                answers[run] = json.loads(lines[-1])
                atomic_write_json(cache_path(run), answers[run])
                say(f"evaluated {run}: test NLL {answers[run]['nll']:.3f}")
            else:
                answers[run] = {"error": (err.strip().splitlines() or [f"exit status {process.returncode}"])[-1]}
                say(f"FAILED {run}: {answers[run]['error']}")
        time.sleep(0.2)
    return answers


def best_of(history: list[dict]) -> tuple[float | None, int | None]:
    """The lowest validation NLL of ``history`` and its (first) epoch."""
    if not history:
        return None, None
    line = min(history, key=lambda h: h["valid_nll"])
    return line["valid_nll"], line["epoch"]


def run_row(run: Path, answer: dict | None) -> dict:
    """One run's facts: settings, why it stopped, its curve and its test figures."""
    config = read_json(run / "config.json")
    final = read_json(run / "final.json") if (run / "final.json").is_file() else None
    state = (read_json(run / "status.json") or {}).get("state") if (run / "status.json").is_file() else None
    history = read_history(run)
    best_valid, best_epoch = best_of(history)
    missing = None if answer or not (run / "best.pt").is_file() else "not evaluated"
    answer = answer or {}
    stopped = final["stopped"] if final else {"cancelled": "cancelled (stop time)"}.get(state, state or "not started")
    seconds = [h["seconds"] for h in history if h["epoch"] > 0]
    return {
        "run": run.name, "run_dir": str(run), "dataset": config["dataset"], "init": config["init"],
        "seed": config["seed"], "state": state, "stopped": stopped,
        "epochs": history[-1]["epoch"] if history else 0, "best_epoch": best_epoch, "best_valid_nll": best_valid,
        "train_seconds": float(sum(seconds)), "seconds_per_epoch": float(np.mean(seconds)) if seconds else None,
        "valid_curve": [h["valid_nll"] for h in history],
        "test_nll": answer.get("nll"), "test_nll_first_frame_scored": answer.get("nll_first_frame_scored"),
        "test_acc": answer.get("acc"), "test_frames": answer.get("frames"),
        "test_frames_first_frame_scored": answer.get("frames_first_frame_scored"),
        "evaluated_epoch": answer.get("epoch"), "evaluate_error": answer.get("error") or missing,
        "worker_test_nll": final.get("nll") if final else None,  # the worker's own figure: the same model
        "marginal_nll": (answer.get("baselines") or {}).get("marginal_nll"),
    }


def mean_std(values) -> dict:
    """``{"mean", "std", "n"}`` over the values that are not ``None`` (sample std; 0 for one value)."""
    clean = [float(v) for v in values if v is not None]
    if not clean:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(clean)), "std": float(np.std(clean, ddof=1)) if len(clean) > 1 else 0.0,
            "n": len(clean)}


def ahead(lae: list[dict], random: list[dict]) -> dict:
    """Whether the LAE start's best-so-far validation curve (mean over seeds) is below the random start's at
    every epoch ``0..E``, ``E`` the last epoch every run of both reached (runs without an epoch are left out).

    A run that ended by early stopping keeps its best so far for good, so it counts as having reached every
    epoch (its last best value carried forward); a run cut by the epoch cap or a time budget does not.

    Returns
    -------
    dict
        ``"epochs_compared"`` (``E``, or ``None`` without curves on both sides), ``"every_epoch"`` (bool or
        ``None``), ``"first_behind"`` (the first epoch where LAE is not below, or ``None``), ``"runs"`` (LAE
        and random runs compared).
    """
    lae, random = [r for r in lae if r["valid_curve"]], [r for r in random if r["valid_curve"]]
    counts = [len(lae), len(random)]
    if not lae or not random:
        return {"epochs_compared": None, "every_epoch": None, "first_behind": None, "runs": counts}
    cut = [len(r["valid_curve"]) for r in lae + random if r["stopped"] != "early stopping"]
    last = (min(cut) if cut else max(len(r["valid_curve"]) for r in lae + random)) - 1
    mine = best_so_far([r["valid_curve"][: last + 1] for r in lae], last + 1)
    theirs = best_so_far([r["valid_curve"][: last + 1] for r in random], last + 1)
    behind = next((e for e in range(last + 1) if mine[e] >= theirs[e]), None)
    return {"epochs_compared": last, "every_epoch": behind is None, "first_behind": behind, "runs": counts}


def tabulate(rows: list[dict]) -> dict:
    """Per dataset and init: the figures over seeds; per dataset: the LAE-against-random verdicts."""
    groups = []
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    verdicts = {}
    for dataset in datasets:
        by_init = {init: [r for r in rows if r["dataset"] == dataset and r["init"] == init]
                   for init in dict.fromkeys(r["init"] for r in rows if r["dataset"] == dataset)}
        for init, members in by_init.items():
            groups.append({"dataset": dataset, "init": init, "seeds": [r["seed"] for r in members],
                           **{key: mean_std([r[key] for r in members]) for key in
                              ("test_nll", "test_nll_first_frame_scored", "best_valid_nll", "best_epoch",
                               "epochs", "seconds_per_epoch")},
                           "stopped": [r["stopped"] for r in members],
                           "marginal_nll": next((r["marginal_nll"] for r in members if r["marginal_nll"]), None)})
        verdicts[dataset] = ahead(by_init.get("lae", []), by_init.get("random", []))
    return {"groups": groups, "ahead": verdicts}


def _fmt(stats: dict, digits: int = 3) -> str:
    if stats["mean"] is None:
        return "-"
    text = f"{stats['mean']:.{digits}f}" + (f" ± {stats['std']:.{digits}f}" if stats["n"] > 1 else "")
    return text if stats["n"] in (0, 3) else f"{text} (n = {stats['n']})"


def _number(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(rows: list[dict], table: dict) -> str:
    """The summary table, the verdicts and the per-run table, as Markdown."""
    out = ["| dataset | init | test NLL, first frame left out (A) | test NLL, every frame (B) | best valid NLL | "
           "best epoch | epochs run | stopped by | s per epoch | per-key-frequency NLL |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    for g in table["groups"]:
        stopped = ", ".join(f"{s} x{g['stopped'].count(s)}" for s in dict.fromkeys(g["stopped"]))
        out.append(f"| {NAMES.get(g['dataset'], g['dataset'])} | {g['init']} | {_fmt(g['test_nll'])} | "
                   f"{_fmt(g['test_nll_first_frame_scored'])} | {_fmt(g['best_valid_nll'])} | "
                   f"{_fmt(g['best_epoch'], 1)} | {_fmt(g['epochs'], 1)} | {stopped} | "
                   f"{_fmt(g['seconds_per_epoch'], 1)} | {_number(g['marginal_nll'], 2)} |")
    out += ["", "| dataset | LAE below random at every epoch (best so far, mean over seeds) | epochs compared | "
            "runs (LAE + random) |", "| --- | --- | ---: | ---: |"]
    for dataset, verdict in table["ahead"].items():
        word = {True: "yes", False: f"no (first behind at epoch {verdict['first_behind']})", None: "-"}
        compared = "-" if verdict["epochs_compared"] is None else f"0-{verdict['epochs_compared']}"
        out.append(f"| {NAMES.get(dataset, dataset)} | {word[verdict['every_epoch']]} | {compared} | "
                   f"{verdict['runs'][0]} + {verdict['runs'][1]} |")
    out += ["", "| run | state | stopped by | epochs | best epoch | best valid NLL | test NLL (A) | test NLL (B) | "
            "worker's test NLL | evaluation |", "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        note = r["evaluate_error"] or (f"model of epoch {r['evaluated_epoch']}" if r["evaluated_epoch"] is not None
                                       else "no model to evaluate (no epoch finished)")
        out.append(f"| {r['dataset']}/{r['run']} | {r['state']} | {r['stopped']} | {r['epochs']} | {'-' if r['best_epoch'] is None else r['best_epoch']} "
                   f"| {_number(r['best_valid_nll'])} | {_number(r['test_nll'])} | "
                   f"{_number(r['test_nll_first_frame_scored'])} | {_number(r['worker_test_nll'])} | {note} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep folders (lapmusic sweep --out)")
    parser.add_argument("--out", required=True, help="write OUT.md and OUT.json")
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="evaluations at once (default: half the cores)")
    parser.add_argument("--device", help="evaluate on this device (default: each run's setting)")
    parser.add_argument("--deadline", type=float, help="seconds after which no evaluation runs (default: none)")
    parser.add_argument("--no-evaluate", action="store_true", help="tabulate the kept evaluations only")
    parser.add_argument("--kept", type=Path, help="an earlier OUT.json whose evaluations to keep (default: none)")
    args = parser.parse_args(argv)
    missing = [str(s) for s in args.sweeps if not (s / "runs").is_dir()]
    if missing:
        parser.error(f"not a sweep folder (no runs/ inside): {', '.join(missing)}; give lapmusic sweep --out folders")
    runs = run_folders(args.sweeps)
    if args.kept is not None:
        keep(runs, json.loads(args.kept.read_text()))
    if args.no_evaluate:
        answers = {run: cached(run, best_of(read_history(run))[1]) for run in runs}
    else:
        answers = evaluate_all(runs, max(1, args.jobs), args.device, args.deadline)
    rows = [run_row(run, answers.get(run)) for run in runs]
    table = tabulate(rows)
    evaluations = {str(run): answer for run, answer in answers.items() if answer and "error" not in answer}
    atomic_write_json(Path(f"{args.out}.json"), {"rows": rows, **table, "evaluations": evaluations})
    Path(f"{args.out}.md").write_text(markdown(rows, table))
    print(markdown(rows, table))
    failed = [r["run_dir"] for r in rows if r["evaluate_error"]]
    if failed:
        print(f"{len(failed)} runs with a model were not evaluated (failed, ended or not started): "
              f"{', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
