"""Figures and equal-epoch tables from sweep tables (the JSON files `lapmusic sweep` writes).

    python scripts/sweep_report.py /tmp/final/jsb/final.json ... --img docs/img --prefix final

For every sweep table given (one dataset each, cells = the recipes compared, usually LAE vs random):

- ``<prefix>_curves_<dataset>.png``: validation NLL of the best model so far against the epoch, mean over
  seeds (thin lines: every seed's raw validation NLL);
- ``<prefix>_gap_<dataset>.png``: validation NLL against training NLL along training (the generalisation
  plot: at equal training NLL, the lower curve generalises better);
- a Markdown table on stdout: best-so-far validation NLL at chosen epochs, and whether the first cell (the
  LAE recipe) is below the second (random) at every epoch.

Needs matplotlib (the ``repro`` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

NAMES = {"jsb": "JSB Chorales", "nottingham": "Nottingham", "musedata": "MuseData", "pianomidi": "Piano-midi.de"}


def best_so_far(curves: list[list[float]], length: int | None = None) -> np.ndarray:
    """Mean over runs of the running minimum, each run padded with its last value to the longest (or to
    ``length`` epochs)."""
    longest = length or max(len(c) for c in curves)
    rows = []
    for curve in curves:
        running = np.minimum.accumulate(np.asarray(curve, dtype=float))
        rows.append(np.concatenate([running, np.full(longest - len(running), running[-1])]))
    return np.mean(rows, axis=0)


def label(cell: dict) -> str:
    init = cell.get("init", "lae")
    extra = {k: v for k, v in cell.items() if k not in ("dataset", "init") and k in LABEL_KEYS}
    return init if not extra else f"{init} ({', '.join(f'{k}={v}' for k, v in extra.items())})"


LABEL_KEYS = ("rec_radius", "lae_decay", "lae_max_lag", "readout_start", "readout_ridge", "dropout", "alpha_target")


def groups(table: dict) -> list[tuple[dict, list[dict]]]:
    out: dict[str, tuple[dict, list]] = {}
    for row in table["rows"]:
        out.setdefault(row["cell_name"], (row["cell"], []))[1].append(row)
    # LAE cells first, so "first below second" reads "LAE below random".
    return sorted(out.values(), key=lambda item: item[0].get("init", "lae") != "lae")


def _save(fig, ax, xlabel: str, ylabel: str, title: str, path: Path) -> str:
    """Label the axes, add the legend, write the figure to ``path`` (PNG, 110 dpi), close it; the path."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def draw(table: dict, dataset: str, img: Path, prefix: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    colours = [f"C{i}" for i in range(10)]
    fig, ax = plt.subplots(figsize=(7, 4))
    floor = []
    for colour, (cell, rows) in zip(colours, groups(table)):
        for row in rows:
            ax.plot(row["valid_curve"], color=colour, alpha=0.25, linewidth=0.8)
        curve = best_so_far([r["valid_curve"] for r in rows])
        floor.append(curve.min())
        ax.plot(curve, color=colour, linewidth=2, label=f"{label(cell)}: best so far, mean of {len(rows)}")
    ax.set_ylim(min(floor) - 0.2, min(floor) + 2.5)
    written.append(_save(fig, ax, "epoch (0 = the network right after initialisation)",
                         "validation NLL (nats per frame)", f"{NAMES.get(dataset, dataset)}: validation NLL per epoch",
                         img / f"{prefix}_curves_{dataset}.png"))

    fig, ax = plt.subplots(figsize=(6, 4.5))
    lows = []
    for colour, (cell, rows) in zip(colours, groups(table)):
        for number, row in enumerate(rows):
            train, valid = np.asarray(row["train_curve"], float), np.asarray(row["valid_curve"], float)
            keep = (train < 12) & (valid < 12)  # the random init's first epochs sit far off the plot
            ax.plot(train[keep], valid[keep], "-", color=colour, alpha=0.7, linewidth=1,
                    label=label(cell) if number == 0 else None)
            if keep.any():
                lows.append(min(train[keep].min(), valid[keep].min()))
    low = min(lows) if lows else 6.0
    ax.plot([low, 12], [low, 12], ":", color="grey", linewidth=1, label="valid = train")
    ax.set_xlim(left=low - 0.1, right=min(11, low + 4))
    ax.set_ylim(bottom=low - 0.1, top=min(11, low + 4))
    ax.invert_xaxis()
    written.append(_save(fig, ax, "training NLL (training goes right to left)", "validation NLL",
                         f"{NAMES.get(dataset, dataset)}: generalisation along training (every seed)",
                         img / f"{prefix}_gap_{dataset}.png"))
    return written


def equal_epoch_rows(table: dict, dataset: str, epochs=(0, 1, 2, 5, 10, 20, 40, 80)) -> list[str]:
    items = groups(table)
    curves = [best_so_far([r["valid_curve"] for r in rows]) for _, rows in items]
    longest = max(len(c) for c in curves)
    padded = [np.concatenate([c, np.full(longest - len(c), c[-1])]) for c in curves]
    # Every LAE recipe is compared with the random init (the last group), epoch by epoch.
    reference = next((i for i, (cell, _) in enumerate(items) if cell.get("init") == "random"), None)
    lines = []
    for number, ((cell, rows), curve) in enumerate(zip(items, padded)):
        values = " | ".join(f"{curve[e]:.2f}" if e < len(curve) else "-" for e in epochs)
        verdict = ""
        if reference is not None and number != reference:
            other = padded[reference]
            behind = next((e for e in range(longest) if curve[e] >= other[e]), None)
            verdict = "yes" if behind is None else f"no (first behind at epoch {behind})"
        lines.append(f"| {NAMES.get(dataset, dataset)} | {label(cell)} | {values} | {curve[-1]:.2f} "
                     f"(epoch {len(curve) - 1}) | {verdict} |")
    return lines


def _stats(values, digits: int) -> str:
    clean = [float(v) for v in values if v is not None]
    if not clean:
        return "-"
    if len(clean) == 1:
        return f"{clean[0]:.{digits}f}"
    return f"{np.mean(clean):.{digits}f} ± {np.std(clean, ddof=1):.{digits}f}"


def final_rows(table: dict, dataset: str) -> list[str]:
    """Test metrics (of the best-validation epoch) per recipe, mean ± std over seeds, with the baselines."""
    lines = []
    for cell, rows in groups(table):
        finals = [json.loads((Path(r["run_dir"]) / "final.json").read_text()) for r in rows]
        base = finals[0].get("baselines") or {}
        stopped = ", ".join(sorted({f"{f['stopped']} ({f['epochs']})" for f in finals}))
        lines.append(
            f"| {NAMES.get(dataset, dataset)} | {label(cell)} | {len(rows)} | {_stats([f['nll'] for f in finals], 2)} | "
            f"{_stats([f['acc'] for f in finals], 1)} | {_stats([f.get('acc_tuned') for f in finals], 1)} "
            f"(p ≥ {_stats([f.get('threshold') for f in finals], 3)}) | "
            f"{_stats([f['best_valid_nll'] for f in finals], 2)} | {_stats([f['best_epoch'] for f in finals], 0)} | "
            f"{stopped} | {base.get('marginal_nll', float('nan')):.2f} | {base.get('copy_previous_acc', float('nan')):.1f} |")
    return lines


FINAL_HEADER = ("| dataset | init | seeds | test NLL | test ACC % (p ≥ 0.5) | test ACC % at the validation threshold | "
                "best valid NLL | best epoch | stopped by (epochs run) | per-key-frequency NLL | "
                "copy-previous ACC % |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", nargs="+", help="sweep JSON tables, one dataset each")
    parser.add_argument("--img", default="docs/img", help="folder for the PNGs (default docs/img)")
    parser.add_argument("--prefix", default="final", help="file name prefix (default final)")
    parser.add_argument("--test", action="store_true",
                        help="also print the test table (final comparison only; default off)")
    args = parser.parse_args(argv)
    img = Path(args.img)
    img.mkdir(parents=True, exist_ok=True)
    epochs = (0, 1, 2, 5, 10, 20, 40, 80)
    print("| dataset | recipe | " + " | ".join(f"epoch {e}" for e in epochs)
          + " | last | LAE ahead at every epoch |")
    print("| --- | --- | " + " | ".join("---:" for _ in epochs) + " | ---: | --- |")
    for path in args.tables:
        table = json.loads(Path(path).read_text())
        dataset = table["base"].get("dataset") or table["rows"][0]["cell"].get("dataset")
        for line in equal_epoch_rows(table, dataset, epochs):
            print(line)
        for written in draw(table, dataset, img, args.prefix):
            print(f"wrote {written}", file=sys.stderr)
    if args.test:
        print()
        print(FINAL_HEADER)
        for path in args.tables:
            table = json.loads(Path(path).read_text())
            dataset = table["base"].get("dataset") or table["rows"][0]["cell"].get("dataset")
            for line in final_rows(table, dataset):
                print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
