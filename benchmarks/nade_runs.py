"""Bernoulli vs NADE output, LAE vs random init, on the four benchmarks (the runs behind docs/research/nade-output.md,
and the stats tables of docs/research/nade-sampling.md).

Settings per dataset follow the ``standard`` budget of scripts/reproduce.py (hidden 128, Adam 1e-3, BPTT 100,
gradient clip 1, learning rate halved after 2 epochs without progress, early stop after 6), with the epoch caps
and training subsets below (a CPU budget); NADE runs use batch 4 and lr 3e-3. One torch thread per process.

    LAPMUSIC_DATA_DIR=/path/to/datasets python benchmarks/nade_runs.py --dataset jsb --out /tmp/nade/runs
    python benchmarks/nade_runs.py --dataset nottingham --outputs nade --inits lae random --out DIR

Each run folder is ``OUT/DATASET-OUTPUT-INIT``; a finished one is reused. Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from lapmusic.training.config import TrainConfig
from lapmusic.training.train import train

SETTINGS = {
    # dataset: (max epochs, batch size, training pieces (None: all), LAE max lag) - the Bernoulli settings
    "jsb": (60, 8, None, None),
    "nottingham": (15, 8, 300, 250),
    "musedata": (10, 16, 60, 250),
    "pianomidi": (10, 8, 40, 250),
}
# NADE: batch 4 and lr 3e-3. On JSB with the Bernoulli settings (batch 8, lr 1e-3: 29 optimizer steps an epoch)
# the validation NLL fell by only 0.08 an epoch; NADE's cost per frame does not depend on the batch size, so
# smaller batches buy more steps for the same CPU time (validation split only, see docs/research/nade-output.md).
NADE_BATCH, NADE_LR = 4, 3e-3
# A linear learning-rate warm-up over the first 300 steps for NADE runs (both inits): without it the LAE-initialised
# NADE on Nottingham went from validation NLL 5.40 to 7.02 in its first epoch at lr 3e-3. JSB ran first, without.
NADE_WARMUP = {"jsb": 0}
NADE_WARMUP_DEFAULT = 300


def config_for(dataset: str, output: str, init: str, epochs: int | None = None, seed: int = 0,
               all_pieces: bool = False, nade_hidden: int | None = None, lr: float | None = None,
               batch: int | None = None, dropout: float = 0.0, nade_skip: bool = False,
               nade_vocab: int = 0, nade_repeat: bool = False, repeat_window: int = 1) -> TrainConfig:
    lr_given, batch_given = lr, batch  # before SETTINGS overwrite `batch` (it did until 2026-11-27 12:20 UTC)
    max_epochs, batch, pieces, lag = SETTINGS[dataset]
    if all_pieces:
        pieces = None
    lr = 1e-3
    warmup = 0
    if output == "nade":
        batch, lr = NADE_BATCH, NADE_LR
        warmup = NADE_WARMUP.get(dataset, NADE_WARMUP_DEFAULT)
    lr, batch = lr_given or lr, batch_given or batch
    extra = {} if nade_hidden is None else {"nade_hidden": nade_hidden}
    return TrainConfig.from_settings(dict(
        dataset=dataset, hidden=128, init=init, epochs=epochs or max_epochs, lr=lr,
        batch_size=batch, seed=seed, device="cpu", max_train_sequences=pieces, bptt=100,
        patience=6, lr_patience=2, lae_max_lag=lag, output=output, warmup_steps=warmup,
        dropout=dropout, nade_skip=nade_skip and output == "nade",
        nade_vocab=nade_vocab if output == "nade" else 0, nade_repeat=nade_repeat and output == "nade",
        nade_repeat_window=repeat_window if nade_repeat and output == "nade" else 1,
        **extra))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(SETTINGS), required=True)
    parser.add_argument("--outputs", nargs="+", choices=["bernoulli", "nade"], default=["nade", "bernoulli"])
    parser.add_argument("--inits", nargs="+", choices=["lae", "random"], default=["lae", "random"])
    parser.add_argument("--epochs", type=int, help="override the epoch cap of SETTINGS")
    parser.add_argument("--all-pieces", action="store_true",
                        help="train on the whole training split instead of the subset of SETTINGS (folder ...-full)")
    parser.add_argument("--nade-hidden", type=int,
                        help="NADE hidden units (default: TrainConfig's; folder ...-nhN when given)")
    parser.add_argument("--lr", type=float, help="override the learning rate (folder ...-lrX)")
    parser.add_argument("--batch", type=int, help="override the batch size (folder ...-bN)")
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout (folder ...-dX when > 0)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (folder ...-sN when not 0)")
    parser.add_argument("--nade-skip", action="store_true",
                        help="NADE biases also linear in the previous frame (TrainConfig.nade_skip; folder ...-skip)")
    parser.add_argument("--nade-vocab", type=int, default=0,
                        help="mix the NADE with a softmax over the N commonest training chords (TrainConfig.nade_vocab; "
                        "folder ...-vN)")
    parser.add_argument("--nade-repeat", action="store_true",
                        help="mix the NADE with a copy of the previous frame (TrainConfig.nade_repeat; folder ...-rep)")
    parser.add_argument("--nade-repeat-window", type=int, default=1,
                        help="with --nade-repeat: copy from the last L frames read (TrainConfig.nade_repeat_window; "
                        "folder ...-repL when L > 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", required=True, help="parent folder of the run folders")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for output in args.outputs:
        for init in args.inits:
            full = "-full" if args.all_pieces else ""
            nh = f"-nh{args.nade_hidden}" if args.nade_hidden and output == "nade" else ""
            nh += (f"-lr{args.lr:g}" if args.lr else "") + (f"-b{args.batch}" if args.batch else "")
            nh += f"-d{args.dropout:g}" if args.dropout else ""
            nh += "-skip" if args.nade_skip and output == "nade" else ""
            nh += f"-v{args.nade_vocab}" if args.nade_vocab and output == "nade" else ""
            nh += "-rep" if args.nade_repeat and output == "nade" else ""
            nh += f"{args.nade_repeat_window}" if args.nade_repeat and output == "nade" and args.nade_repeat_window > 1 else ""
            nh += f"-s{args.seed}" if args.seed else ""
            run_dir = Path(args.out) / f"{args.dataset}{full}-{output}-{init}{nh}"
            if (run_dir / "final.json").exists():
                final = json.loads((run_dir / "final.json").read_text())
            else:
                config = config_for(args.dataset, output, init, args.epochs, seed=args.seed, all_pieces=args.all_pieces,
                                    nade_hidden=args.nade_hidden if output == "nade" else None,
                                    lr=args.lr, batch=args.batch, dropout=args.dropout, nade_skip=args.nade_skip,
                                    nade_vocab=args.nade_vocab, nade_repeat=args.nade_repeat,
                                    repeat_window=args.nade_repeat_window)
                final = train(config, run_dir, resume=(run_dir / "checkpoint.pt").exists(),
                              progress=lambda f, m: None)
            print(json.dumps({"run": str(run_dir), "output": output, "init": init, "nll": final.get("nll"),
                              "acc": final.get("acc"), "expected_acc": final.get("expected_acc"),
                              "best_epoch": final.get("best_epoch"), "epochs": final.get("epochs"),
                              "seconds": final.get("seconds")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
