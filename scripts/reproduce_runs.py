"""The runs of scripts/reproduce.py: budgets, the shared LAE per dataset, the seeds of both inits, and the
"what was tried" grid. Every run folder is reused when its settings are unchanged."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lapmusic.training.config import TrainConfig
from lapmusic.training.train import train

DATASETS = ("jsb", "nottingham", "musedata", "pianomidi")
NAMES = {"jsb": "JSB Chorales", "nottingham": "Nottingham", "musedata": "MuseData", "pianomidi": "Piano-midi.de"}

# Settings shared by both inits and every dataset (anything not named keeps TrainConfig's default).
SHARED = dict(hidden=128, lr=1e-3, optimizer="adam", clip=1.0, dropout=0.0, weight_decay=0.0, bptt=100,
              lr_patience=2, patience=6, alpha_target=1.5, readout_steps=20, lae_solver="approx", device="cpu")

BUDGETS = {
    # The budget of docs/results.md's tables: 4 datasets x 2 inits x 3 seeds, on the CPU.
    "standard": {
        "jsb": dict(epochs=60, batch_size=8),
        "nottingham": dict(epochs=35, batch_size=8, max_train_sequences=300),
        "musedata": dict(epochs=20, batch_size=16, max_train_sequences=200),
        "pianomidi": dict(epochs=25, batch_size=8),
    },
    # The standard budget with fewer epochs.
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
