"""Run a grid of training recipes in parallel worker processes and write one table (Markdown + JSON).

A grid is a base config, axes whose values are crossed, optional variants (each one crossed with the
product) and seeds. Every cell x seed is one run folder under ``--out``; a folder whose ``final.json``
exists with the same config is reused, so an interrupted sweep resumes where it stopped. LAE-init runs of
the same LAE settings share one LAE, fitted once (seed 0) in the sweep folder, as ``scripts/reproduce.py``
does.

    python scripts/sweep.py --out /tmp/sweep --base dataset=jsb epochs=30 batch_size=8 \\
        --axis init=lae,random --axis lae_max_lag=4,16,null --seeds 0 --jobs 2
    python scripts/sweep.py --spec grid.json --jobs 2 --final      # test NLL too: for the final table only
    python scripts/sweep.py --spec grid.json --report-only          # tabulate finished runs, train nothing

A JSON spec holds the same: ``{"base": {...}, "axes": {"name": [values]}, "variants": [{...}, ...],
"seeds": [0, 1, 2]}``. Values on the command line are read as JSON when they parse (``null``, ``1e-3``,
``true``), else as strings. The table gives, per cell, mean +- std over seeds of the best validation NLL,
its epoch, the training NLL at that epoch (the generalisation gap) and the validation NLL at epoch 0;
test NLL and ACC only with ``--final`` (select on validation, report test once).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lapmusic.core.errors import LapMusicError
from lapmusic.core.io import atomic_write_json, atomic_write_text
from lapmusic.training.config import TrainConfig
from lapmusic.training.rundir import read_history

LAE_KEYS = ("dataset", "hidden", "max_sequences", "max_train_sequences", "lae_max_lag", "lae_decay", "lae_solver")


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_pairs(items) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise LapMusicError(f"expected name=value, got {item!r}")
        name, value = item.split("=", 1)
        out[name.strip()] = parse_value(value)
    return out


def parse_axis(item: str) -> tuple[str, list]:
    if "=" not in item:
        raise LapMusicError(f"--axis expects name=v1,v2,..., got {item!r}")
    name, values = item.split("=", 1)
    return name.strip(), [parse_value(v) for v in values.split(",")]


def expand(spec: dict) -> list[dict]:
    """The cells of a spec: base, updated by every combination of the axes, crossed with the variants."""
    base = dict(spec.get("base", {}))
    axes = spec.get("axes", {})
    names = list(axes)
    variants = spec.get("variants") or [{}]
    cells = []
    for combo in itertools.product(*(axes[n] for n in names)):
        for variant in variants:
            cell = dict(base, **dict(zip(names, combo)), **variant)
            if cell.get("init", "lae") == "random":  # LAE-only settings mean nothing for the random init
                for key in ("lae_max_lag", "lae_decay", "readout_start", "readout_ridge", "readout_steps",
                            "alpha_target", "alpha", "lae_path", "readout_skip_fit"):
                    cell.pop(key, None)
            if cell not in cells:
                cells.append(cell)
    return cells


def cell_name(cell: dict, base: dict) -> str:
    """A folder-safe name from the settings that differ from the base (``base`` when none)."""
    parts = [f"{k}={cell[k]}" for k in sorted(cell) if k not in base or base[k] != cell[k]]
    parts = parts or [f"init={cell.get('init', 'lae')}"]
    name = "_".join(parts)
    return "".join(ch if ch.isalnum() or ch in "=.-_" else "-" for ch in name)


def lae_key(cell: dict) -> tuple:
    defaults = TrainConfig().to_dict()
    return tuple((k, cell.get(k, defaults[k])) for k in LAE_KEYS)


# ------------------------------------------------------------------------------------------ workers
def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def fit_shared_lae(key: tuple, path: str, seed: int = 0) -> str:
    """Fit the LAE a group of LAE-init cells shares (on the run's training pieces) and save it."""
    from lapmusic.lae.fit import fit_lae
    from lapmusic.training.build import load_run_dataset, training_pieces
    from lapmusic.training.pretrain import lae_lags

    settings = dict(key)
    config = TrainConfig.from_settings(dict(settings, init="lae"))
    pieces = training_pieces(config, load_run_dataset(config.dataset))
    lae = fit_lae(pieces, config.model.hidden, solver=config.lae_solver, max_lag=lae_lags(config),
                  decay=config.lae_decay, seed=seed, device="cpu" if config.device == "auto" else config.device)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    lae.save(path)
    return path


def _saved_config(run_dir: Path) -> dict:
    """The run's config.json through TrainConfig.from_dict: a folder written before a setting existed gets its
    default, so it still matches (and is reused) instead of being retrained or refused."""
    return TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text())).to_dict()


def run_cell(config_dict: dict, run_dir: str) -> dict:
    """Train one run (or reuse a finished one with the same config); returns its summary row."""
    from lapmusic.training.train import train

    run_dir = Path(run_dir)
    config = TrainConfig.from_settings(config_dict)  # a partial dict: unnamed settings keep TrainConfig's defaults
    config.validate()
    final_path = run_dir / "final.json"
    if final_path.exists() and _saved_config(run_dir) == config.to_dict():
        return summarise(run_dir)
    if run_dir.exists() and (run_dir / "checkpoint.pt").exists():
        if _saved_config(run_dir) != config.to_dict():
            raise LapMusicError(f"{run_dir} holds a run with other settings; remove it or use another --out")
        train(config, run_dir, resume=True)
    else:
        train(config, run_dir)
    return summarise(run_dir)


def summarise(run_dir: Path) -> dict:
    final = json.loads((run_dir / "final.json").read_text())
    history = read_history(run_dir)
    best = final["best_epoch"]
    line = next((h for h in history if h["epoch"] == best), {})
    return {
        "run_dir": str(run_dir),
        "best_valid_nll": final["best_valid_nll"],
        "best_epoch": best,
        "epochs": final["epochs"],
        "train_nll_at_best": line.get("train_nll"),
        "valid_nll_epoch0": history[0]["valid_nll"] if history else None,
        "valid_curve": [h["valid_nll"] for h in history],
        "train_curve": [h["train_nll"] for h in history],
        "test_nll": final.get("nll"),
        "test_acc": final.get("acc"),
        "test_acc_tuned": final.get("acc_tuned"),
        "threshold": final.get("threshold"),
        "seconds": final.get("seconds"),
    }


# ------------------------------------------------------------------------------------------ table
def mean_std(values) -> tuple[float | None, float | None]:
    clean = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not clean:
        return None, None
    return float(np.mean(clean)), float(np.std(clean, ddof=1)) if len(clean) > 1 else 0.0


def fmt(stats, digits: int = 3) -> str:
    mean, std = stats
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" if not std else f"{mean:.{digits}f} ± {std:.{digits}f}"


COLUMNS = [("best_valid_nll", "best valid NLL", 3), ("best_epoch", "best epoch", 1),
           ("train_nll_at_best", "train NLL at best", 3), ("valid_nll_epoch0", "valid NLL epoch 0", 3)]
FINAL_COLUMNS = [("test_nll", "test NLL", 3), ("test_acc", "test ACC % (p >= 0.5)", 2),
                 ("test_acc_tuned", "test ACC % (valid threshold)", 2)]


def table(rows: list[dict], base: dict, final: bool) -> tuple[str, list[dict]]:
    groups: dict[str, list] = {}
    cells: dict[str, dict] = {}
    for row in rows:
        groups.setdefault(row["cell_name"], []).append(row)
        cells[row["cell_name"]] = row["cell"]
    columns = COLUMNS + (FINAL_COLUMNS if final else [])
    header = "| cell | seeds | " + " | ".join(title for _, title, _ in columns) + " |"
    lines = [header, "| --- | ---: | " + " | ".join("---:" for _ in columns) + " |"]
    summary = []
    order = sorted(groups, key=lambda n: mean_std(r["best_valid_nll"] for r in groups[n])[0] or 1e9)
    for name in order:
        group = groups[name]
        stats = {key: mean_std(r[key] for r in group) for key, _, _ in columns}
        summary.append({"cell": cells[name], "name": name, "seeds": [r["seed"] for r in group],
                        **{key: {"mean": m, "std": s} for key, (m, s) in stats.items()},
                        "runs": [r["run_dir"] for r in group]})
        label = ", ".join(f"{k}={v}" for k, v in sorted(cells[name].items()) if base.get(k, object()) != v) or "base"
        lines.append(f"| {label} | {len(group)} | " + " | ".join(fmt(stats[k], d) for k, _, d in columns) + " |")
    return "\n".join(lines) + "\n", summary


# ------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", help="JSON file with base, axes, variants, seeds (default: none)")
    parser.add_argument("--base", nargs="*", default=[], metavar="NAME=VALUE",
                        help="TrainConfig settings shared by every cell (default: none; TrainConfig's defaults)")
    parser.add_argument("--axis", action="append", default=[], metavar="NAME=V1,V2",
                        help="an axis of the grid; repeat to cross several (default: none)")
    parser.add_argument("--variant", action="append", default=[], metavar="'NAME=V NAME=V'",
                        help="a set of settings crossed with the axes; repeat for several (default: none)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the spec's, else 0)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel worker processes (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    parser.add_argument("--out", required=True, help="sweep folder (run folders, shared LAEs, table)")
    parser.add_argument("--name", default="sweep", help="table file name stem under --out (default sweep)")
    parser.add_argument("--final", action="store_true",
                        help="also report test NLL/ACC (only for the final table; default off)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: tabulate the finished run folders of the grid as they are (default off)")
    parser.add_argument("--share-lae", choices=["yes", "no"], default="yes",
                        help="fit one LAE per LAE setting and share it across seeds (default yes)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    spec = json.loads(Path(args.spec).read_text()) if args.spec else {}
    spec.setdefault("base", {}).update(parse_pairs(args.base))
    axes = spec.setdefault("axes", {})
    for item in args.axis:
        name, values = parse_axis(item)
        axes[name] = values
    if args.variant:
        spec["variants"] = [parse_pairs(v.split()) for v in args.variant]
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else spec.get("seeds", [0])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cells = expand(spec)
    for cell in cells:
        TrainConfig.from_settings(cell).validate()  # a typo fails now, not in a worker an hour later
    base = spec["base"]
    print(f"[{time.strftime('%H:%M:%S')}] {len(cells)} cells x {len(seeds)} seeds, {args.jobs} jobs", flush=True)

    rows = []
    if args.report_only:
        for cell in cells:
            name = cell_name(cell, base)
            for seed in seeds:
                run_dir = out / "runs" / f"{name}_s{seed}"
                if (run_dir / "final.json").exists():
                    rows.append(dict(summarise(run_dir), cell=cell, cell_name=name, seed=seed))
        return write_table(rows, base, axes, seeds, out, args)
    with ProcessPoolExecutor(max_workers=max(1, args.jobs), initializer=_worker_init,
                             initargs=(args.threads,)) as pool:
        lae_paths = {}
        if args.share_lae == "yes":
            futures = {}
            for cell in cells:
                if cell.get("init", "lae") != "lae" or cell.get("lae_path"):
                    continue
                key = lae_key(cell)
                if key in lae_paths:
                    continue
                path = out / "lae" / (cell_name(dict(key), {}) + ".npz")
                lae_paths[key] = path
                if not path.exists():
                    futures[pool.submit(fit_shared_lae, key, str(path))] = key
            for future in as_completed(futures):
                try:
                    future.result()
                except LapMusicError as exc:  # e.g. p above the rank of a short-lag Xi: skip those cells
                    print(f"[{time.strftime('%H:%M:%S')}] LAE FAILED {futures[future]}: {exc}", flush=True)
                    lae_paths[futures[future]] = None
                    continue
                print(f"[{time.strftime('%H:%M:%S')}] LAE fitted: {futures[future]}", flush=True)
        jobs = {}
        for cell in cells:
            name = cell_name(cell, base)
            if cell.get("init", "lae") == "lae" and lae_paths.get(lae_key(cell), "") is None:
                continue
            for seed in seeds:
                config = dict(cell, seed=seed)
                if cell.get("init", "lae") == "lae" and lae_key(cell) in lae_paths:
                    config["lae_path"] = str(lae_paths[lae_key(cell)])
                run_dir = out / "runs" / f"{name}_s{seed}"
                jobs[pool.submit(run_cell, config, str(run_dir))] = (cell, name, seed)
        for future in as_completed(jobs):
            cell, name, seed = jobs[future]
            try:
                row = future.result()
            except Exception as exc:  # one failed cell must not lose the others
                print(f"[{time.strftime('%H:%M:%S')}] FAILED {name} seed {seed}: {exc}", flush=True)
                continue
            rows.append(dict(row, cell=cell, cell_name=name, seed=seed))
            print(f"[{time.strftime('%H:%M:%S')}] done {name} seed {seed}: best valid "
                  f"{row['best_valid_nll']:.3f} @ {row['best_epoch']}", flush=True)
    return write_table(rows, base, axes, seeds, out, args)


def write_table(rows, base, axes, seeds, out: Path, args) -> int:
    text, summary = table(rows, base, args.final)
    title = (f"Sweep `{args.name}`: base {json.dumps(base)}; seeds {seeds}; "
             f"{'test metrics of the best-validation epoch included' if args.final else 'validation only'}\n\n")
    atomic_write_text(out / f"{args.name}.md", title + text)
    atomic_write_json(out / f"{args.name}.json", {"base": base, "axes": axes, "seeds": seeds, "cells": summary,
                                                 "rows": rows})
    print(title + text, flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LapMusicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
