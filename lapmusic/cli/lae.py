"""``lapmusic lae``: fit the linear autoencoder on a dataset's training split and save it."""

from __future__ import annotations

import argparse

from lapmusic.cli.common import DATASET_HELP, ProgressLine, check_dataset, check_device, emit, positive_int
from lapmusic.cli.options import RECIPE_DEFAULTS
from lapmusic.core.errors import LapMusicError


def cmd_lae(args: argparse.Namespace) -> int:
    """Fit the LAE with ``--hidden`` units, print its summary and write it to ``--out`` when given."""
    check_dataset(args.dataset)
    check_device(args.device)

    if not 0 < args.decay <= 1:
        raise LapMusicError(f"--decay must be above 0 and at most 1 (1: the paper's unweighted LAE), got {args.decay}")

    from lapmusic.data.registry import load_dataset
    from lapmusic.lae.fit import fit_lae, weighted_max_lag

    progress = ProgressLine()
    dataset = load_dataset(args.dataset, progress=progress)
    pieces = dataset.train[: args.max_sequences] if args.max_sequences else dataset.train
    model = fit_lae(
        pieces, args.hidden, solver=args.solver, max_lag=weighted_max_lag(args.decay, args.max_lag),
        decay=args.decay, device=args.device, seed=args.seed, progress=progress,
    )
    progress.close()
    if args.out:
        model.save(args.out)
    result = {"dataset": dataset.key, "pieces": len(pieces), **model.summary(), "out": args.out}

    def human(r: dict) -> str:
        values = ", ".join(f"{v:.3g}" for v in r["top_singular_values"][:5])
        lines = [
            f"LAE on {r['dataset']} ({r['pieces']} training pieces), lag weighting {r['decay']:g}, solver "
            f"{r['solver']} on {r['device']}",
            f"  Xi: {r['rows']} rows x {r['columns']} columns (max lag {r['max_lag']})",
            f"  p = {r['p']}: {100 * r['energy_captured']:.1f} % of the energy captured; "
            f"top singular values {values}",
            f"  {r['seconds']:.1f} s",
        ]
        if r["out"]:
            lines.append(f"  wrote {r['out']} (A {r['p']}x88, B {r['p']}x{r['p']}, singular_values)")
        return "\n".join(lines)

    emit(result, args.json, human)
    return 0


def add_lae_parser(sub) -> None:
    """Add the ``lae`` subcommand to ``sub`` (the subparsers of ``lapmusic``)."""
    p = sub.add_parser("lae", help="fit the linear autoencoder (pre-training) and save A, B, singular values")
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--hidden", required=True, type=positive_int, help="number of hidden units p (required)")
    p.add_argument("--solver", choices=["auto", "gram", "exact", "approx"], default="auto",
                   help="gram: eigenvectors of the data matrix's Gram matrix (few columns: --decay below 1 or a short --max-lag); "
                   "exact: dense SVD of the full data matrix; approx: randomized, never builds it; "
                   "auto (default): gram up to 4,096 non-zero columns, else approx")
    p.add_argument("--max-sequences", type=positive_int,
                   help="use only the first N training pieces (default: all)")
    p.add_argument("--decay", type=float, default=RECIPE_DEFAULTS["lae_decay"], metavar="GAMMA",
                   help="weight lag k of the data matrix by GAMMA**k, 0 < GAMMA <= 1: the LAE a run fits with the "
                   f"same --lae-decay; 1 is the paper's unweighted LAE (default {RECIPE_DEFAULTS['lae_decay']}, as training)")
    p.add_argument("--max-lag", type=positive_int,
                   help="longest prefix kept (default: the longest piece, or with --decay below 1 the lag where "
                   "GAMMA**L < 1e-12)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (default auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the randomized solver (default 0)")
    p.add_argument("--out", help="write A, B and singular_values to this .npz file (default: not saved)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    p.set_defaults(func=cmd_lae)
