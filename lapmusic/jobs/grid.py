"""Grids of training runs: the JSON spec, its cells, shared LAEs, run summaries and the one table.

A grid is a base config, axes whose values are crossed, optional variants (each one crossed with the
product) and seeds: ``{"base": {...}, "axes": {"name": [values]}, "variants": [{...}, ...], "seeds": [0, 1]}``.
Every cell x seed is one run folder ``OUT/runs/CELL_sSEED``; LAE-init runs of the same LAE settings share one
LAE, fitted once (seed 0) under ``OUT/lae``. :mod:`lapmusic.jobs.gridrun` trains the runs (``lapmusic sweep``);
this module plans them and writes ``OUT/NAME.md`` and ``OUT/NAME.json``.

``python -m lapmusic.jobs.grid lae SETTINGS_JSON PATH`` fits one shared LAE (what an engine runs).
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np

from lapmusic.core.errors import LapMusicError
from lapmusic.core.io import atomic_write_json, atomic_write_text
from lapmusic.training.config import TrainConfig
from lapmusic.training.rundir import read_history

LAE_KEYS = ("dataset", "hidden", "max_sequences", "max_train_sequences", "lae_max_lag", "lae_decay", "lae_solver")
LAE_ONLY = ("lae_max_lag", "lae_decay", "readout_start", "readout_ridge", "readout_steps", "alpha_target", "alpha",
            "lae_path", "readout_skip_fit")
"""Settings that mean nothing for the random init: dropped from its cells."""


def parse_value(text: str):
    """``text`` as JSON when it parses (``null``, ``1e-3``, ``true``), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_pairs(items) -> dict:
    """``["name=value", ...]`` as a dict, values through :func:`parse_value`.

    Raises
    ------
    LapMusicError
        An item without ``=``.
    """
    out = {}
    for item in items or []:
        if "=" not in item:
            raise LapMusicError(f"expected name=value, got {item!r}")
        name, value = item.split("=", 1)
        out[name.strip()] = parse_value(value)
    return out


def parse_axis(item: str) -> tuple[str, list]:
    """``"name=v1,v2"`` as ``(name, [v1, v2])``; raises :class:`LapMusicError` without ``=``."""
    if "=" not in item:
        raise LapMusicError(f"--axis expects name=v1,v2,..., got {item!r}")
    name, values = item.split("=", 1)
    return name.strip(), [parse_value(v) for v in values.split(",")]


def expand(spec: dict) -> list[dict]:
    """The cells of a spec: base, updated by every combination of the axes, crossed with the variants.

    Parameters
    ----------
    spec : dict
        ``{"base": dict, "axes": {name: list}, "variants": list of dict}`` (each part optional).

    Returns
    -------
    list of dict
        The distinct cells (partial ``TrainConfig`` settings), in axis order.
    """
    base = dict(spec.get("base", {}))
    axes = spec.get("axes", {})
    names = list(axes)
    variants = spec.get("variants") or [{}]
    cells = []
    for combo in itertools.product(*(axes[n] for n in names)):
        for variant in variants:
            cell = dict(base, **dict(zip(names, combo)), **variant)
            if cell.get("init", "lae") == "random":
                for key in LAE_ONLY:
                    cell.pop(key, None)
            if cell not in cells:
                cells.append(cell)
    return cells


def cell_name(cell: dict, base: dict) -> str:
    """A folder-safe name from the settings that differ from the base (``init=...`` when none)."""
    parts = [f"{k}={cell[k]}" for k in sorted(cell) if k not in base or base[k] != cell[k]]
    parts = parts or [f"init={cell.get('init', 'lae')}"]
    name = "_".join(parts)
    return "".join(ch if ch.isalnum() or ch in "=.-_" else "-" for ch in name)


def lae_key(cell: dict) -> tuple:
    """The settings that decide a cell's LAE: cells with the same key share one."""
    defaults = TrainConfig().to_dict()
    return tuple((k, cell.get(k, defaults[k])) for k in LAE_KEYS)


def fit_shared_lae(settings: dict, path: str, seed: int = 0) -> str:
    """Fit the LAE a group of LAE-init cells shares (on the run's training pieces) and save it to ``path``.

    Raises
    ------
    LapMusicError
        The LAE cannot be fitted (e.g. more hidden units than the rank of a short-lag Xi).
    """
    from lapmusic.lae.fit import fit_lae
    from lapmusic.training.build import load_run_dataset, training_pieces
    from lapmusic.training.pretrain import lae_lags

    config = TrainConfig.from_settings(dict(settings, init="lae"))
    pieces = training_pieces(config, load_run_dataset(config.dataset))
    lae = fit_lae(pieces, config.model.hidden, solver=config.lae_solver, max_lag=lae_lags(config),
                  decay=config.lae_decay, seed=seed, device="cpu" if config.device == "auto" else config.device)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    lae.save(path)
    return path


def saved_config(run_dir: Path) -> dict:
    """The run's config.json through ``TrainConfig.from_dict``: a folder written before a setting existed gets
    its default, so it still matches (and is reused) instead of being retrained or refused."""
    return TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text())).to_dict()


def summarise(run_dir: Path) -> dict:
    """One finished run's row: best validation NLL and epoch, the curves, test metrics when evaluated."""
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


def mean_std(values) -> tuple[float | None, float | None]:
    """Mean and sample std of the finite values (std 0 for one value; ``(None, None)`` for none)."""
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
    """The Markdown table (one line per cell, mean ± std over seeds, best cell first) and its JSON summary.

    Parameters
    ----------
    rows : list of dict
        :func:`summarise` rows with ``cell``, ``cell_name`` and ``seed`` added.
    base : dict
        The grid's base settings (left out of the cell labels).
    final : bool
        Add the test columns.
    """
    groups: dict[str, list] = {}
    cells: dict[str, dict] = {}
    for row in sorted(rows, key=lambda r: (r["cell_name"], r["seed"])):  # any finishing order, one table
        groups.setdefault(row["cell_name"], []).append(row)
        cells[row["cell_name"]] = row["cell"]
    columns = COLUMNS + (FINAL_COLUMNS if final else [])
    header = "| cell | seeds | " + " | ".join(title for _, title, _ in columns) + " |"
    lines = [header, "| --- | ---: | " + " | ".join("---:" for _ in columns) + " |"]
    summary = []
    order = sorted(groups, key=lambda n: (mean_std(r["best_valid_nll"] for r in groups[n])[0] or 1e9, n))
    for name in order:
        group = groups[name]
        stats = {key: mean_std(r[key] for r in group) for key, _, _ in columns}
        summary.append({"cell": cells[name], "name": name, "seeds": [r["seed"] for r in group],
                        **{key: {"mean": m, "std": s} for key, (m, s) in stats.items()},
                        "runs": [r["run_dir"] for r in group]})
        label = ", ".join(f"{k}={v}" for k, v in sorted(cells[name].items()) if base.get(k, object()) != v) or "base"
        lines.append(f"| {label} | {len(group)} | " + " | ".join(fmt(stats[k], d) for k, _, d in columns) + " |")
    return "\n".join(lines) + "\n", summary


def write_table(rows: list[dict], spec: dict, seeds: list, out: Path, name: str, final: bool,
                problems: list[dict] | None = None) -> str:
    """Write ``OUT/NAME.md`` and ``OUT/NAME.json`` (atomically) and return the Markdown.

    ``problems`` are the runs that failed or were retried (``{"run_dir", "attempts", "outcome", "error"}``).
    """
    text, summary = table(rows, spec.get("base", {}), final)
    title = (f"Sweep `{name}`: base {json.dumps(spec.get('base', {}))}; seeds {seeds}; "
             f"{'test metrics of the best-validation epoch included' if final else 'validation only'}\n\n")
    atomic_write_text(out / f"{name}.md", title + text)
    atomic_write_json(out / f"{name}.json", {"base": spec.get("base", {}), "axes": spec.get("axes", {}),
                                             "seeds": seeds, "cells": summary,
                                             "rows": sorted(rows, key=lambda r: (r["cell_name"], r["seed"])),
                                             "problems": problems or []})
    return title + text


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "lae":
        print("usage: python -m lapmusic.jobs.grid lae SETTINGS_JSON PATH", file=sys.stderr)
        sys.exit(2)
    try:
        fit_shared_lae(dict(json.loads(sys.argv[2])), sys.argv[3])
    except LapMusicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
