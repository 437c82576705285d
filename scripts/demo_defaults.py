"""Measure candidate settings for the app's default demo on the Bach set (docs/research/app.md, "The default demo").

For every (lr, batch, seed) it trains the LAE run and the random run (one process, one torch thread, the
dataset loaded once) and prints, per run: epochs run, best epoch, best validation NLL, test NLL, ACC at
p >= 0.5 and at the threshold of highest validation ACC (a 0.005 grid), CPU seconds, and whether the LAE run's
best-so-far validation NLL is below the random run's at every epoch. The trivial baselines of both splits are
printed first. Settings are chosen on the validation split; test figures are only reported.

    python scripts/demo_defaults.py --out /tmp/demo-grid --lr 0.003 --batch 8 --seeds 0,1,2 --epochs 30

With ``--preset NAME`` it trains the app's default pair instead, built as the app builds it (its sidebar
defaults, ``lapmusic.ui.sidebar.Settings.configs``) with the preset and each seed, and prints per run the epochs,
best epoch, validation and test NLL, seconds, and the ``lapmusic stats`` comparison of 20 samples of 64 frames
(temperature 1, from silence) with the training pieces: how many of the 7 statistics fall inside the real
pieces' 10-90 % range (docs/research/presets.md):

    python scripts/demo_defaults.py --out /tmp/demo-music --preset music --seeds 0,1,2 --max-seconds 0
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np
import torch


def _probs(model, seqs):
    """Next-frame probabilities ``(N, 88)`` and targets of frames 2..T of every piece."""
    ps, ys = [], []
    with torch.inference_mode():
        for piece in seqs:
            logits, _ = model(torch.as_tensor(piece, dtype=torch.float32)[None, :-1])
            ps.append(torch.sigmoid(logits[0]).numpy())
            ys.append(piece[1:].astype(bool))
    return np.concatenate(ps), np.concatenate(ys)


def _acc(p, y, threshold):
    on = p >= threshold
    tp, fp, fn = (on & y).sum(), (on & ~y).sum(), (~on & y).sum()
    return 100.0 * tp / max(tp + fp + fn, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="parent folder of the run folders (existing runs are reused)")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--lr", default="0.003", help="comma-separated learning rates")
    parser.add_argument("--batch", default="8", help="comma-separated batch sizes")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--preset", help="train the app's default pair with this preset (see above)")
    parser.add_argument("--max-seconds", type=int,
                        help="with --preset: the runs' time budget, 0 for none (default: the app's)")
    args = parser.parse_args()

    torch.set_num_threads(1)
    if args.preset:
        preset_pairs(args.out, args.preset, [int(v) for v in args.seeds.split(",")], args.max_seconds)
        return
    from lapmusic.data.registry import load_dataset
    from lapmusic.model.config import ModelConfig
    from lapmusic.model.metrics import baselines
    from lapmusic.training.config import TrainConfig
    from lapmusic.training.results import load_run
    from lapmusic.training.train import train

    data = load_dataset("bach")
    print("baselines valid", baselines(data.train, data.valid), "test", baselines(data.train, data.test))
    grid = np.arange(0.05, 0.951, 0.005)
    for lr, batch, seed in itertools.product(
        [float(v) for v in args.lr.split(",")], [int(v) for v in args.batch.split(",")],
        [int(v) for v in args.seeds.split(",")],
    ):
        best_so_far = {}
        for init in ("lae", "random"):
            run_dir = Path(args.out) / f"h{args.hidden}-lr{lr:g}-b{batch}-s{seed}-{init}"
            cpu = time.process_time()
            if not (run_dir / "final.json").is_file():
                config = TrainConfig(dataset="bach", model=ModelConfig(hidden=args.hidden), init=init, lr=lr,
                                     batch_size=batch, seed=seed, epochs=args.epochs, patience=args.patience, device="cpu")
                train(config, run_dir, dataset=data)
            cpu = time.process_time() - cpu
            rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
            best_so_far[init] = np.minimum.accumulate([r["valid_nll"] for r in rows])
            run = load_run(run_dir, device="cpu")
            pv, yv = _probs(run.model, data.valid)
            pt, yt = _probs(run.model, data.test)
            threshold = grid[int(np.argmax([_acc(pv, yv, t) for t in grid]))]
            final = json.loads((run_dir / "final.json").read_text())
            print(f"{run_dir.name:28s} epochs {final['epochs']:3d} best {final['best_epoch']:3d} "
                  f"valid NLL {final['best_valid_nll']:.3f} | test NLL {final['nll']:.3f} ACC@0.5 {_acc(pt, yt, 0.5):5.1f} "
                  f"ACC@{threshold:.3f} {_acc(pt, yt, threshold):5.1f} | cpu {cpu:5.1f} s load {os.getloadavg()[0]:.1f}",
                  flush=True)
        lae, rnd = best_so_far["lae"], best_so_far["random"]
        n = max(len(lae), len(rnd))
        ahead = all(lae[min(i, len(lae) - 1)] < rnd[min(i, len(rnd) - 1)] for i in range(n))
        print(f"  LAE ahead of random at every epoch (best validation NLL so far): {ahead}")


def preset_pairs(out: str, preset: str, seeds: list[int], max_seconds: int | None = None) -> None:
    """Train the app's default pair with ``preset`` for every seed; print metrics and sample statistics.

    ``max_seconds``: the runs' time budget (0: none, the quiet machine's case; None: the app's default).
    """
    import dataclasses

    from lapmusic.data.registry import load_dataset
    from lapmusic.sampling.stats_sources import sample_stats
    from lapmusic.training.results import load_run
    from lapmusic.training.train import train
    from lapmusic.ui.defaults import app_defaults
    from lapmusic.ui.sidebar import Settings

    defaults = app_defaults()
    fields = {f.name for f in dataclasses.fields(Settings)}
    data = load_dataset(defaults["dataset"])
    for seed in seeds:
        values = {k: v for k, v in defaults.items() if k in fields}
        settings = Settings(**dict(values, preset=preset, seed=seed, device="cpu"))
        if max_seconds is not None:
            settings.max_seconds = max_seconds
        for config in settings.configs():
            run_dir = Path(out) / f"{preset}-{config.init}-s{seed}"
            started, cpu = time.perf_counter(), time.process_time()
            if not (run_dir / "final.json").is_file():
                train(config, run_dir, dataset=data)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            final = json.loads((run_dir / "final.json").read_text())
            result = sample_stats(load_run(run_dir, device="cpu"), n_samples=20, steps=64, temperature=1.0, seed=0,
                                  dataset=data)
            inside = result["inside"]
            outside = [name for name, ok in inside.items() if not ok]
            print(f"{run_dir.name:22s} epochs {final['epochs']:3d} ({final['stopped']}) best {final['best_epoch']:3d} valid NLL "
                  f"{final['best_valid_nll']:.3f} test NLL {final['nll']:.3f} | {seconds:5.1f} s wall {cpu:5.1f} s CPU | stats inside "
                  f"{sum(bool(v) for v in inside.values())}/{len(inside)} outside: {', '.join(outside) or '-'} | "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
