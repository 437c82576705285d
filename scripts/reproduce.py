"""Reproduce the paper's comparison (LAE pre-training vs random init) and write docs/results.md.

For every dataset: one LAE is fitted on the training pieces (seed 0) and shared by the LAE-init runs of
every seed; then LAE-init and random-init networks are trained with identical settings for each seed.
Everything in the generated part of docs/results.md comes from the run folders this script writes
(``final.json``, ``metrics.jsonl``); finished runs with identical settings are reused, so the report can be
regenerated (``--report-only``) or an interrupted reproduction continued.

    LAPMUSIC_DATA_DIR=/path/to/datasets python scripts/reproduce.py --budget standard --threads 1
    python scripts/reproduce.py --budget quick --datasets jsb --doc /tmp/results.md   # a 2-minute smoke run
    python scripts/reproduce.py --explore      # the "what was tried" runs (one seed, JSB)
    python scripts/reproduce.py --report-only  # rewrite the document from existing runs

Budgets (``--budget``) fix the hidden size, the epoch cap and, for the large sets, how many training pieces
are used; ``--epoch-scale`` multiplies every epoch cap (e.g. 3 for a longer run on a faster machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lapmusic.model.metrics import ANCHOR_NLL
from lapmusic.training.config import TrainConfig
from lapmusic.training.results import compare_runs
from lapmusic.training.rundir import read_history
from lapmusic.training.train import train

DATASETS = ("jsb", "nottingham", "musedata", "pianomidi")
NAMES = {"jsb": "JSB Chorales", "nottingham": "Nottingham", "musedata": "MuseData", "pianomidi": "Piano-midi.de"}

# Settings shared by both inits and every dataset (anything not named keeps TrainConfig's default).
SHARED = dict(hidden=128, lr=1e-3, optimizer="adam", clip=1.0, dropout=0.0, weight_decay=0.0, bptt=100,
              lr_patience=2, patience=6, alpha_target=1.5, readout_steps=20, lae_solver="approx", device="cpu")

BUDGETS = {
    # About 40-50 minutes for 4 datasets x 2 inits x 3 seeds on 1-2 shared CPU cores.
    "standard": {
        "jsb": dict(epochs=60, batch_size=8),
        "nottingham": dict(epochs=35, batch_size=8, max_train_sequences=300),
        "musedata": dict(epochs=20, batch_size=16, max_train_sequences=200),
        "pianomidi": dict(epochs=25, batch_size=8),
    },
    # The first run of this project: the standard budget with fewer epochs (about 26 min of CPU here).
    "short": {
        "jsb": dict(epochs=40, batch_size=8),
        "nottingham": dict(epochs=20, batch_size=8, max_train_sequences=300),
        "musedata": dict(epochs=12, batch_size=16, max_train_sequences=200),
        "pianomidi": dict(epochs=15, batch_size=8),
    },
    # A smoke run: a few minutes, numbers meaningless.
    "quick": {
        "jsb": dict(epochs=3, batch_size=16, hidden=32, max_train_sequences=40),
        "nottingham": dict(epochs=2, batch_size=16, hidden=32, max_train_sequences=40),
        "musedata": dict(epochs=2, batch_size=16, hidden=32, max_train_sequences=20),
        "pianomidi": dict(epochs=2, batch_size=8, hidden=32, max_train_sequences=10),
    },
}
LAE_MAX_LAG = {"jsb": None, "nottingham": 250, "musedata": 250, "pianomidi": 250}

# The "what was tried" grid: one seed, LAE init (plus random init where the change applies to both), the
# standard settings otherwise; Nottingham variants are capped at EXPLORE_EPOCHS["nottingham"] epochs.
EXPLORE_EPOCHS = {"jsb": None, "nottingham": 10}
_VARIANTS = [
    ("standard settings", {}),
    ("alpha target 0.1", dict(alpha_target=0.1)),
    ("alpha target 0.5", dict(alpha_target=0.5)),
    ("alpha target 3.0", dict(alpha_target=3.0)),
    ("alpha target 5.0", dict(alpha_target=5.0)),
    ("readout: least squares only", dict(readout_steps=0)),
    ("W_rec = B scaled to spectral radius 0.9", dict(lae_max_radius=0.9)),
    ("per-matrix relative learning rate", dict(relative_lr=True)),
    ("warm-up 300 steps", dict(warmup_steps=300)),
    ("lr 3e-4", dict(lr=3e-4)),
    ("lr 3e-3", dict(lr=3e-3)),
]
EXPLORE = [("jsb", name, overrides) for name, overrides in _VARIANTS] + [
    ("jsb", "dropout 0.3", dict(dropout=0.3)),
    ("jsb", "hidden 64", dict(hidden=64)),
    ("jsb", "hidden 256", dict(hidden=256)),
    ("jsb", "SGD, momentum 0.9, lr 0.05", dict(optimizer="sgd", lr=0.05)),
    ("jsb", "batch 32", dict(batch_size=32)),
    ("jsb", "no early stopping", dict(patience=None)),
    ("jsb", "alpha target 5.0, dropout 0.3, no early stopping", dict(alpha_target=5.0, dropout=0.3, patience=None)),
] + [("nottingham", name, overrides) for name, overrides in _VARIANTS if name not in ("alpha target 0.1", "lr 3e-3")]

# Relative cost of a dataset under the standard budget (to balance --workers).
COST = {"jsb": 1.0, "nottingham": 5.0, "musedata": 5.0, "pianomidi": 4.0}

def _first(settings_by_key: dict, name: str):
    """A setting of the first dataset's runs (None for runs saved before the setting existed)."""
    return next(iter(settings_by_key.values()), {}).get(name)


def markers(budget: str) -> tuple[str, str]:
    """Each budget's generated block sits between its own markers in the document."""
    return (f"<!-- BEGIN GENERATED by scripts/reproduce.py --budget {budget} -->",
            f"<!-- END GENERATED --budget {budget} -->")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def dataset_settings(budget: str, key: str, epoch_scale: float) -> dict:
    settings = dict(SHARED)
    settings.update(BUDGETS[budget][key])
    settings["epochs"] = max(1, int(round(settings["epochs"] * epoch_scale)))
    settings["lae_max_lag"] = LAE_MAX_LAG[key]
    return settings


def shared_lae(key: str, settings: dict, dataset, folder: Path) -> tuple[Path, float]:
    """Fit (or reuse) the dataset's LAE once; every LAE-init seed starts from it."""
    from lapmusic.lae.autoencoder import LinearAutoencoder
    from lapmusic.lae.fit import fit_lae
    from lapmusic.training.build import training_pieces

    lag = settings["lae_max_lag"]
    subset = settings.get("max_train_sequences")
    path = folder / f"lae-p{settings['hidden']}-lag{lag or 'all'}-n{subset or 'all'}.npz"
    if path.exists():
        lae = LinearAutoencoder.load(path)
        return path, float(lae.seconds)
    pieces = training_pieces(TrainConfig.from_settings(dict(settings, dataset=key, seed=0)), dataset)
    log(f"{key}: fitting the LAE (p={settings['hidden']}, max lag {lag}, {len(pieces)} pieces)")
    lae = fit_lae(pieces, settings["hidden"], solver=settings["lae_solver"], max_lag=lag, seed=0, device="cpu")
    folder.mkdir(parents=True, exist_ok=True)
    lae.save(path)
    log(f"{key}: LAE fitted in {lae.seconds:.1f} s, energy captured {lae.energy_captured:.3f}")
    return path, float(lae.seconds)


def run_one(config: TrainConfig, run_dir: Path, dataset) -> dict:
    final_path = run_dir / "final.json"
    if final_path.exists():
        saved = json.loads((run_dir / "config.json").read_text())
        if saved == config.to_dict():
            return json.loads(final_path.read_text())
        raise SystemExit(f"{run_dir} holds a run with other settings: remove it or choose another --out")
    resume = (run_dir / "checkpoint.pt").exists()
    started = time.perf_counter()
    final = train(config, run_dir, dataset=dataset, resume=resume)
    log(f"  {run_dir.name}: test NLL {final['nll']:.3f}, best epoch {final['best_epoch']}/{final['epochs']}, "
        f"{time.perf_counter() - started:.0f} s")
    return final


def reproduce(args) -> dict:
    from lapmusic.data.registry import load_dataset

    timing = {}
    for key in args.datasets:
        settings = dataset_settings(args.budget, key, args.epoch_scale)
        folder = Path(args.out) / args.budget / key
        if args.report_only:
            continue
        started = time.perf_counter()
        dataset = load_dataset(key)
        lae_path, lae_seconds = shared_lae(key, settings, dataset, folder)
        for seed in range(args.seeds):
            for init in ("lae", "random"):
                fields = dict(settings, dataset=key, init=init, seed=seed)
                if init == "lae":
                    fields["lae_path"] = str(lae_path)
                run_one(TrainConfig.from_settings(fields), folder / f"{init}-s{seed}", dataset)
        timing[key] = {"wall_seconds": time.perf_counter() - started, "lae_fit_seconds": lae_seconds}
        log(f"{key}: done in {timing[key]['wall_seconds']:.0f} s")
    return timing


def explore_settings(key: str, overrides: dict) -> dict:
    settings = dataset_settings("standard", key, 1.0)
    if EXPLORE_EPOCHS.get(key):
        settings["epochs"] = EXPLORE_EPOCHS[key]
    settings.update(overrides)
    return settings


def explore(args) -> None:
    from lapmusic.data.registry import load_dataset

    datasets = {}
    for key, name, overrides in EXPLORE:
        if key not in args.datasets:
            continue
        if key not in datasets:
            datasets[key] = load_dataset(key)
        settings = explore_settings(key, overrides)
        for init in explore_inits(overrides):
            fields = dict(settings)
            if init == "lae" and "hidden" not in overrides:  # the dataset's shared LAE, as in the main runs
                fields["lae_path"] = str(shared_lae(key, settings, datasets[key], Path(args.out) / "explore" / key)[0])
            config = TrainConfig.from_settings(dict(fields, dataset=key, init=init, seed=0))
            log(f"explore {key}: {name} ({init})")
            run_one(config, explore_folder(args, config), datasets[key])


def explore_inits(overrides: dict) -> tuple[str, ...]:
    """LAE-only settings (alpha, readout) need no random-init twin."""
    lae_only = {"alpha_target", "readout_steps", "alpha", "lae_max_radius"}
    return ("lae",) if overrides and set(overrides) <= lae_only else ("lae", "random")


def explore_folder(args, config: TrainConfig) -> Path:
    """A folder named by a hash of the settings: changing the standard budget never mixes old runs in."""
    import hashlib

    digest = hashlib.sha1(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
    return Path(args.out) / "explore" / config.dataset / f"{config.init}-{digest}"


# ------------------------------------------------------------------------------------------ report
def fmt(stats: dict | None, digits: int = 2) -> str:
    if not stats or stats.get("mean") is None:
        return "-"
    if stats.get("n", 1) > 1:
        return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"
    return f"{stats['mean']:.{digits}f}"


def number(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def curve_image(key: str, run_dirs: list[Path], image: Path, anchors: dict) -> None:
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("the learning-curve images need matplotlib: pip install -e '.[repro]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"lae": "#1f77b4", "random": "#ff7f0e"}
    labels = {"lae": "LAE pre-trained", "random": "random init"}
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    tops, bottoms = [], []
    random_start = None
    for init in ("lae", "random"):
        curves = []
        for run_dir in run_dirs:
            if not run_dir.name.startswith(init + "-"):
                continue
            history = read_history(run_dir)
            epochs = [h["epoch"] for h in history]
            values = [h["valid_nll"] for h in history]
            ax.plot(epochs, values, color=colours[init], alpha=0.3, linewidth=0.8)
            curves.append(values)
        if not curves:
            continue
        longest = max(len(c) for c in curves)
        mean = [float(np.mean([c[e] for c in curves if len(c) > e])) for e in range(longest)]
        ax.plot(range(longest), mean, color=colours[init], linewidth=2.2, label=f"{labels[init]} (mean)")
        bottoms.append(min(min(c) for c in curves))
        tops.append(mean[0] if init == "lae" else (mean[1] if len(mean) > 1 else mean[0]))
        if init == "random":
            random_start = mean[0]
    for (name, value), style in zip(anchors.items(), (":", "--")):
        ax.axhline(value, color="grey", linestyle=style, linewidth=1, label=f"{name}: test NLL {value}")
    if tops:
        low = min(bottoms + list(anchors.values())) - 0.2
        high = max(tops) + 0.3
        ax.set_ylim(low, high)
        if random_start is not None and random_start > high:
            ax.text(0.15, high - 0.05 * (high - low), f"random init, epoch 0: {random_start:.1f} (off the chart)",
                    fontsize=7, color=colours["random"], va="top")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch (0 = right after initialisation)")
    ax.set_ylabel("validation NLL (nats per frame)")
    ax.set_title(f"{NAMES[key]}: validation NLL per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    image.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(image)
    plt.close(fig)


def image_name(budget: str, key: str) -> str:
    return f"curves_{key}.png" if budget == "standard" else f"curves_{budget}_{key}.png"


def report(args, record: dict) -> str:
    begin, end = markers(args.budget)
    lines = [begin, "", f"## Budget `{args.budget}`", ""]
    lines.append(f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
                 f"`python scripts/reproduce.py --budget {args.budget} --seeds {args.seeds}"
                 f"{f' --epoch-scale {args.epoch_scale}' if args.epoch_scale != 1 else ''}`"
                 f" from the run folders in `{Path(args.out).name}/{args.budget}/`.")
    timing = record.get("datasets", {})
    if timing:
        per = ", ".join(f"{NAMES.get(k, k)} {v['wall_seconds'] / 60:.1f} min" for k, v in timing.items())
        total = sum(v["wall_seconds"] for v in timing.values())
        lines.append(f"Runs started {record.get('started_at')} on an {platform.machine()} CPU, one torch thread per "
                     f"process; wall clock per dataset ({args.seeds} seeds x 2 inits, plus the LAE fit unless a "
                     f"saved one was reused): {per}; "
                     f"{total / 60:.0f} min of CPU in all. Load average at the start "
                     f"{record.get('load_before', [0])[0]:.1f} on 2 cores shared with other jobs, so every "
                     "second below is pessimistic.")
    lines.append("")
    summaries, finals_by_key, settings_by_key = {}, {}, {}
    for key in args.datasets:
        folder = Path(args.out) / args.budget / key
        run_dirs = sorted(p for p in folder.glob("*-s*") if (p / "final.json").exists())
        if not run_dirs:
            continue
        summaries[key] = compare_runs(run_dirs)
        finals_by_key[key] = [json.loads((d / "final.json").read_text()) for d in run_dirs]
        settings_by_key[key] = json.loads((run_dirs[0] / "config.json").read_text())
        curve_image(key, run_dirs, Path(args.img) / image_name(args.budget, key), ANCHOR_NLL[key])

    lines += ["### Settings (identical for both inits)", "",
              "| dataset | hidden | max epochs | batch | lr | BPTT | early stop | training pieces used | "
              "LAE max lag | alpha (LAE init) |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key, config in settings_by_key.items():
        finals = finals_by_key[key]
        alphas = [f["pretrain"].get("alpha") for f in finals if f["init"] == "lae" and f.get("pretrain")]
        pieces = finals[0].get("train_pieces")
        lines.append(f"| {NAMES[key]} | {config['hidden']} | {config['epochs']} | {config['batch_size']} | "
                     f"{config['lr']:g} | {config['bptt']} | {config['patience']} epochs | {pieces} | "
                     f"{config['lae_max_lag'] or 'longest piece'} | {number(np.mean(alphas) if alphas else None, 3)} |")
    lines += ["", f"Shared: {SHARED['optimizer']} optimizer, gradient norm clipped at {SHARED['clip']}, learning "
              f"rate halved after {SHARED['lr_patience']} epochs without a better validation NLL, best epoch by "
              "validation NLL kept; LAE init: lag k weighted by "
              f"{_first(settings_by_key, 'lae_decay') or 1}^k, readout = least squares (first IRLS step) + "
              f"{SHARED['readout_steps']} L-BFGS logistic steps, ridge {_first(settings_by_key, 'readout_ridge')}; "
              "random init = PyTorch's default "
              "(uniform ±1/√hidden) for the same network.", ""]

    lines += ["### Test results (mean ± std over seeds, best epoch by validation NLL)", "",
              "| dataset | init | seeds | test NLL | ACC % | expected ACC % | best epoch | pre-training s | training s |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key, summary in summaries.items():
        for init in ("lae", "random"):
            s = summary["inits"].get(init)
            if not s:
                continue
            pre = fmt(s["pretrain_seconds"], 1) if init == "lae" else "0"
            lines.append(f"| {NAMES[key]} | {'LAE' if init == 'lae' else 'random'} | {s['nll']['n']} | "
                         f"{fmt(s['nll'])} | {fmt(s['acc'])} | {fmt(s['expected_acc'])} | {fmt(s['best_epoch'], 1)} | "
                         f"{pre} | {fmt(s['seconds'], 1)} |")
    lines += ["", "Pre-training seconds = fitting the readout on the LAE states (plus choosing alpha); the LAE "
              "itself is fitted once per dataset and shared by the seeds: "]
    for key in summaries:
        lae_seconds = [f["pretrain"].get("lae_fit_seconds") for f in finals_by_key[key] if f["init"] == "lae"]
        if lae_seconds:
            lines[-1] += f"{NAMES[key]} {lae_seconds[0]:.1f} s; "
    lines[-1] = lines[-1].rstrip("; ") + "."
    lines.append("")

    lines += ["### Equal epochs: validation NLL of the best model so far (mean over seeds)", "",
              "A run stopped early keeps its best model, so its value is carried on to later epochs. The raw "
              "per-epoch curves are in the images below.", "",
              "| dataset | init | epoch 0 | epoch 1 | epoch 2 | epoch 5 | epoch 10 | epoch 20 | last | LAE ahead at every epoch | "
              "epochs for LAE to reach random's best |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for key, summary in summaries.items():
        for init in ("lae", "random"):
            curve = summary["best_so_far_curve"].get(init) or []
            cells = [number(curve[e]) if e < len(curve) else "-" for e in (0, 1, 2, 5, 10, 20)]
            last = f"{number(curve[-1])} (epoch {len(curve) - 1})" if curve else "-"
            reach = summary["epochs_to_reach_random_best"]
            extra = ("| " + ("yes" if summary["lae_better_at_equal_epochs"] else "no") + " | " +
                     (f"{reach['mean']:.1f} (reached in {reach['reached']} seeds)" if reach["mean"] is not None
                      else f"not reached ({reach['reached']})") + " |") if init == "lae" else "| | |"
            lines.append(f"| {NAMES[key]} | {'LAE' if init == 'lae' else 'random'} | " + " | ".join(cells) +
                         f" | {last} " + extra)
    lines.append("")

    lines += ["### Anchors from the literature and trivial baselines (test split)", "",
              "| dataset | this code, LAE | this code, random | anchor (test NLL) | best known recurrent | "
              "per-key frequency NLL | copy-previous-frame ACC % |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key, summary in summaries.items():
        anchor_name, anchor = next(iter(ANCHOR_NLL[key].items()))
        best_name, best = list(ANCHOR_NLL[key].items())[-1]
        base = finals_by_key[key][0].get("baselines") or {}
        lines.append(f"| {NAMES[key]} | {fmt(summary['inits'].get('lae', {}).get('nll'))} | "
                     f"{fmt(summary['inits'].get('random', {}).get('nll'))} | {anchor} ({anchor_name}) | {best} | "
                     f"{number(base.get('marginal_nll'))} | {number(base.get('copy_previous_acc'))} |")
    lines.append("")
    lines += ["### Learning curves", ""]
    for key in summaries:
        lines.append(f"![{NAMES[key]}: validation NLL per epoch]({Path(args.img).name}/{image_name(args.budget, key)})")
        lines.append("")

    explored = []
    for key, name, overrides in (EXPLORE if args.budget == "standard" else []):
        settings = explore_settings(key, overrides)
        for init in explore_inits(overrides):
            fields = dict(settings)
            if init == "lae" and "hidden" not in overrides:
                lag, subset = settings["lae_max_lag"], settings.get("max_train_sequences")
                fields["lae_path"] = str(Path(args.out) / "explore" / key /
                                         f"lae-p{settings['hidden']}-lag{lag or 'all'}-n{subset or 'all'}.npz")
            run_dir = explore_folder(args, TrainConfig.from_settings(dict(fields, dataset=key, init=init, seed=0)))
            if (run_dir / "final.json").exists():
                explored.append((key, name, init, run_dir))
    for key in dict.fromkeys(k for k, _, _, _ in explored):
        epochs = EXPLORE_EPOCHS.get(key)
        lines += [f"### What was tried on {NAMES[key]} (one seed, standard settings otherwise"
                  f"{f', at most {epochs} epochs' if epochs else ''})", "",
                  "| variant | init | valid NLL epoch 0 | valid NLL epoch 1 | best valid NLL | best epoch | test NLL | test ACC % |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for _, name, init, run_dir in (e for e in explored if e[0] == key):
            final = json.loads((run_dir / "final.json").read_text())
            history = read_history(run_dir)
            second = number(history[1]["valid_nll"]) if len(history) > 1 else "-"
            lines.append(f"| {name} | {init} | {number(history[0]['valid_nll'])} | {second} | "
                         f"{number(final['best_valid_nll'])} | {final['best_epoch']} | {number(final['nll'])} | "
                         f"{number(final['acc'])} |")
        lines.append("")
    lines.append(end)
    return "\n".join(lines)


def write_document(path: Path, generated: str, budget: str) -> None:
    """Replace this budget's block; a new block goes after the last generated one (or at the end)."""
    from lapmusic.core.io import atomic_write_text

    begin, end = markers(budget)
    text = path.read_text() if path.exists() else "# Results: LAE pre-training vs random initialisation\n\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + generated + rest.split(end, 1)[1]
    else:
        last = text.rfind("<!-- END GENERATED")
        if last >= 0:
            cut = text.index("-->", last) + 3
            text = text[:cut] + "\n\n" + generated + text[cut:]
        else:
            text = text.rstrip("\n") + "\n\n" + generated + "\n"
    atomic_write_text(path, text)


def run_workers(args) -> None:
    """Split the datasets over ``args.workers`` processes (one torch thread each) and wait for them."""
    import subprocess

    groups = [[] for _ in range(args.workers)]
    loads = [0.0] * args.workers
    for key in sorted(args.datasets, key=lambda k: -COST.get(k, 1.0)):  # largest first, to the lightest worker
        lightest = loads.index(min(loads))
        groups[lightest].append(key)
        loads[lightest] += COST.get(key, 1.0)
    processes = []
    for number, group in enumerate(g for g in groups if g):
        command = [sys.executable, str(Path(__file__).resolve()), "--budget", args.budget, "--seeds", str(args.seeds),
                   "--epoch-scale", str(args.epoch_scale), "--threads", str(args.threads), "--out", args.out,
                   "--datasets", ",".join(group), "--no-report"]
        log(f"worker {number + 1}: {', '.join(group)}")
        processes.append(subprocess.Popen(command))
    failed = [p.args for p in processes if p.wait() != 0]
    if failed:
        raise SystemExit(f"{len(failed)} worker(s) failed; rerun to continue (finished runs are reused)")


def merge_record(path: Path, timing: dict, started_at: str, load_before) -> dict:
    """``reproduce.json``: per-dataset wall seconds, merged over invocations and workers."""
    from lapmusic.core.io import atomic_write_json

    record = json.loads(path.read_text()) if path.exists() else {"datasets": {}}
    record.setdefault("started_at", started_at)
    record.setdefault("load_before", list(load_before))
    record["datasets"].update(timing)
    atomic_write_json(path, record)
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="standard")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated dataset keys")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epoch-scale", type=float, default=1.0, help="multiply every epoch cap")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process (default 1)")
    parser.add_argument("--workers", type=int, default=1, help="datasets trained in this many processes at once")
    parser.add_argument("--out", default=str(ROOT / "runs" / "reproduce"), help="folder for the run folders")
    parser.add_argument("--doc", default=str(ROOT / "docs" / "results.md"))
    parser.add_argument("--img", default=None, help="image folder (default: img/ beside --doc)")
    parser.add_argument("--explore", action="store_true",
                        help="run only the 'what was tried' grid (then rewrite the document from all runs)")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the document from runs")
    parser.add_argument("--no-report", action="store_true", help=argparse.SUPPRESS)  # used by --workers
    args = parser.parse_args(argv)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    args.img = args.img or str(Path(args.doc).parent / "img")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = os.getloadavg()
    record_path = Path(args.out) / args.budget / "reproduce.json"
    if args.explore:
        if not args.report_only:
            explore(args)
        args.report_only = True  # --explore runs only the grid; the document is regenerated from all runs
    if args.workers > 1 and not args.report_only:
        run_workers(args)
    else:
        timing = reproduce(args)
        if timing:
            merge_record(record_path, timing, started_at, load_before)
    if args.no_report:
        return 0
    record = json.loads(record_path.read_text()) if record_path.exists() else {"datasets": {}}
    args.datasets = [k for k in DATASETS if (Path(args.out) / args.budget / k).exists()]
    generated = report(args, record)
    write_document(Path(args.doc), generated, args.budget)
    log(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
