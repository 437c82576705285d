"""The ``lapmusic`` command: datasets, LAE pre-training, training, evaluation, sampling.

Every subcommand with ``--json`` prints exactly one JSON object as the last line of stdout;
progress lines go to stderr so that stdout stays machine-readable.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from lapmusic import __version__
from lapmusic.cli.common import (
    DATASET_HELP,
    ProgressLine,
    _check_dataset,
    _check_device,
    _check_file,
    _check_run_dir,
    _positive_int,
    _seed_list,
    emit,
)
from lapmusic.cli.datasets import _add_datasets_parser
from lapmusic.cli.generate import cmd_generate, cmd_stats
from lapmusic.cli.options import (
    _add_training_options,
    _training_config,
)
from lapmusic.core.errors import LapMusicError


# --------------------------------------------------------------------------------------- lae
def cmd_lae(args: argparse.Namespace) -> int:
    _check_dataset(args.dataset)
    _check_device(args.device)

    from lapmusic.data.registry import load_dataset
    from lapmusic.lae.fit import fit_lae

    progress = ProgressLine()
    dataset = load_dataset(args.dataset, progress=progress)
    pieces = dataset.train[: args.max_sequences] if args.max_sequences else dataset.train
    model = fit_lae(
        pieces, args.hidden, solver=args.solver, max_lag=args.max_lag, device=args.device,
        seed=args.seed, progress=progress,
    )
    progress.close()
    if args.out:
        model.save(args.out)
    result = {"dataset": dataset.key, "pieces": len(pieces), **model.summary(), "out": args.out}

    def human(r: dict) -> str:
        values = ", ".join(f"{v:.3g}" for v in r["top_singular_values"][:5])
        lines = [
            f"LAE on {r['dataset']} ({r['pieces']} training pieces), solver {r['solver']} on {r['device']}",
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


# --------------------------------------------------------------------------------------- train
def _final_text(result: dict) -> str:
    if result.get("state") == "cancelled":
        return f"cancelled after epoch {result.get('epoch')}; resume with --resume {result.get('run_dir')}"

    def number(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    return (f"test NLL {number(result.get('nll'))}  ACC {number(result.get('acc'), 2)}%  "
            f"expected ACC {number(result.get('expected_acc'), 2)}%  ({result.get('frames')} frames, "
            f"{result.get('output', 'bernoulli')} output)\n"
            f"best epoch {result.get('best_epoch')} of {result.get('epochs')} ({result.get('stopped')}), "
            f"pre-training {number(result.get('pretrain_seconds'), 1)} s, training {number(result.get('seconds'), 1)} s "
            f"on {result.get('device')}")


def _changed_on_resume(args: argparse.Namespace) -> list[str]:
    """The options of ``train`` given with a value other than their default that a resume would not apply.

    A resumed run keeps its own configuration (config.json): silently training with the old learning rate
    after ``--resume R --lr X`` would mislead, so such options are refused instead.
    """
    from lapmusic.training.config import RESUMABLE_CHANGES

    defaults = vars(build_parser().parse_args(["train"]))
    kept = {"resume", "json", "func", "command", *RESUMABLE_CHANGES}
    return ["--" + name.replace("_", "-") for name, default in defaults.items()
            if name not in kept and getattr(args, name) != default]


def cmd_train(args: argparse.Namespace) -> int:
    _check_device(args.device)
    _check_file(args.lae_path, "LAE file")
    if args.resume:
        _check_run_dir(args.resume)
    else:
        if not args.dataset or not args.hidden or not args.out:
            raise LapMusicError("a new run needs --dataset, --hidden and --out (or --resume RUNDIR)")
        _check_dataset(args.dataset)

    from lapmusic.training.config import RESUMABLE_CHANGES
    from lapmusic.training.train import train

    if args.resume:
        ignored = _changed_on_resume(args)
        if ignored:
            allowed = ", ".join("--" + n.replace("_", "-") for n in RESUMABLE_CHANGES)
            raise LapMusicError(
                f"--resume continues {args.resume} with the settings it was started with; "
                f"{', '.join(ignored)} cannot change (only {allowed} may). Start a new run with --out to change them")
        config = None
        if any(getattr(args, name) is not None for name in RESUMABLE_CHANGES):
            from pathlib import Path

            from lapmusic.training.build import config_from_run

            config = config_from_run(Path(args.resume))
            for name in RESUMABLE_CHANGES:
                if getattr(args, name) is not None:
                    setattr(config, name, getattr(args, name))
        run_dir = args.resume
    else:
        config = _training_config(args, dataset=args.dataset, hidden=args.hidden, init=args.init,
                                  epochs=args.epochs or 20, seed=args.seed, max_sequences=args.max_sequences,
                                  device=args.device, cell=args.cell)
        run_dir = args.out
    progress = ProgressLine()
    try:
        result = train(config, run_dir, progress=progress, resume=bool(args.resume))
    finally:
        progress.close()
    result = dict(result, run_dir=str(run_dir))
    emit(result, args.json, _final_text)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    _check_run_dir(args.rundir)
    _check_device(args.device)

    from lapmusic.model.metrics import baselines
    from lapmusic.training.build import run_split
    from lapmusic.training.results import evaluate, load_run, validation_threshold
    run = load_run(args.rundir, device=args.device)
    progress = ProgressLine()
    progress(0.0, f"loading dataset {run.config.dataset}")
    from lapmusic.training.build import load_run_dataset

    dataset = load_run_dataset(run.config.dataset)
    seqs = run_split(run.config, args.split, dataset)
    if args.threshold is not None:
        if not 0 < args.threshold < 1:
            raise LapMusicError(f"--threshold must be between 0 and 1, not {args.threshold}")
        threshold, source = args.threshold, "--threshold"
    else:
        source = "final.json" if run.final and run.final.get("threshold") is not None else "validation split"
        progress(0.2, "choosing the decision threshold on the validation split")
        threshold = validation_threshold(run, run_split(run.config, "valid", dataset))
    progress(0.3, f"evaluating {len(seqs)} {args.split} pieces")
    result = evaluate(run, seqs, threshold=threshold)
    result["threshold_source"] = source
    result["baselines"] = baselines(run_split(run.config, "train", dataset), seqs)
    progress(1.0, "done")
    progress.close()
    result.update(split=args.split, rundir=str(args.rundir), checkpoint=run.checkpoint, epoch=run.epoch,
                  output=run.config.model.output, acc_method=run.model.head.acc_method())

    def human(r: dict) -> str:
        def number(value, digits=3):
            return "-" if value is None else f"{value:.{digits}f}"

        b = r["baselines"]
        return (f"{r['split']}: NLL {number(r['nll'])}  ACC {number(r['acc'], 2)}% (p >= 0.5), "
                f"{number(r.get('acc_tuned'), 2)}% (p >= {number(r.get('threshold'), 3)}, threshold from "
                f"{r['threshold_source']})  expected ACC "
                f"{number(r['expected_acc'], 2)}%  ({r['frames']} frames, {r['checkpoint']} model of epoch "
                f"{r['epoch']}, {r['output']} output; {r['acc_method']})\nbaselines: copy-previous-frame ACC "
                f"{number(b['copy_previous_acc'], 2)}%, per-key frequency NLL {number(b['marginal_nll'])}")

    emit(result, args.json, human)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import json as json_module
    from pathlib import Path

    _check_dataset(args.dataset)
    _check_device(args.device)
    _check_file(args.lae_path, "LAE file")
    parent = Path(args.out)
    print(f"run folders go under {parent.resolve()} (--out)", file=sys.stderr)

    from lapmusic.training.config import TrainConfig
    from lapmusic.training.results import compare_runs
    from lapmusic.training.train import train

    run_dirs = []
    jobs = [(seed, init) for seed in args.seeds for init in ("lae", "random")]
    for number, (seed, init) in enumerate(jobs):
        config = _training_config(args, dataset=args.dataset, hidden=args.hidden, init=init, epochs=args.epochs,
                                  seed=seed, max_sequences=args.max_sequences, device=args.device)
        model = config.model
        suffix = "-nade" if model.output == "nade" else ""  # Bernoulli keeps the folder names it always had
        suffix += "-skip" if model.nade_skip else ""
        suffix += f"-vocab{model.nade_vocab}" if model.nade_vocab else ""
        suffix += "-repeat" if model.nade_repeat else ""
        suffix += f"{model.nade_repeat_window}" if model.nade_repeat and model.nade_repeat_window > 1 else ""
        suffix += "-rskip" if model.readout_skip else ""  # the readout's previous-frame skip
        run_dir = parent / f"{args.dataset.replace(':', '_')}-h{args.hidden}-e{args.epochs}-{init}-s{seed}{suffix}"
        run_dirs.append(run_dir)
        if (run_dir / "final.json").exists():
            # Through from_dict: a folder written before a config key existed gets that key's default.
            saved = TrainConfig.from_dict(json_module.loads((run_dir / "config.json").read_text())).to_dict()
            if saved == config.to_dict():
                print(f"reusing finished run {run_dir}", file=sys.stderr)
                continue
            raise LapMusicError(f"{run_dir} holds a run with other settings; choose another --out")
        label = f"[{number + 1}/{len(jobs)}] {init} seed {seed}"
        progress = ProgressLine()
        try:
            result = train(config, run_dir, progress=lambda f, m: progress(f, f"{label}: {m}"),
                           resume=(run_dir / "checkpoint.pt").exists())
        finally:
            progress.close()
        if result.get("state") != "finished":
            raise LapMusicError(f"run {run_dir} did not finish ({result.get('state')})")
    summary = compare_runs(run_dirs)
    summary.update(dataset=args.dataset, hidden=args.hidden, epochs=args.epochs, seeds=list(args.seeds),
                   out=str(parent), output=args.output or "bernoulli", run_dirs=[str(d) for d in run_dirs])

    def human(r: dict) -> str:
        def cell(stats, digits=3):
            if stats["mean"] is None:
                return "-"
            return f"{stats['mean']:.{digits}f} +- {stats['std']:.{digits}f}"

        lines = [f"{r['dataset']}, {r['hidden']} hidden units, {r['output']} output, up to {r['epochs']} epochs, "
                 f"seeds {', '.join(str(s) for s in r['seeds'])}",
                 f"{'init':<8}{'test NLL':>20}{'ACC %':>18}{'expected ACC %':>18}{'best epoch':>14}"
                 f"{'pre-train s':>14}{'train s':>12}"]
        for init, s in r["inits"].items():
            lines.append(f"{init:<8}{cell(s['nll']):>20}{cell(s['acc'], 2):>18}{cell(s['expected_acc'], 2):>18}"
                         f"{cell(s['best_epoch'], 1):>14}{cell(s['pretrain_seconds'], 1):>14}{cell(s['seconds'], 1):>12}")
        reach = r["epochs_to_reach_random_best"]
        mean = "-" if reach["mean"] is None else f"{reach['mean']:.1f}"
        lines.append(f"epochs for LAE init to reach random init's best validation NLL: {mean} "
                     f"(reached in {reach['reached']} seed pairs)")
        lines.append(f"run folders: {r['out']}")
        return "\n".join(lines)

    emit(summary, args.json, human)
    return 0


# --------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lapmusic",
        description="Pre-training RNNs on polyphonic music via linear autoencoders "
        "(Pasa & Sperduti, NIPS 2014): datasets, LAE, training, evaluation, sampling.",
    )
    parser.add_argument("--version", action="version", version=f"lapmusic {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _add_datasets_parser(sub)

    p = sub.add_parser("lae", help="fit the linear autoencoder (pre-training) and save A, B, singular values")
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--hidden", required=True, type=_positive_int, help="number of hidden units p (required)")
    p.add_argument("--solver", choices=["exact", "approx"], default="approx",
                   help="exact: dense SVD of the full data matrix; approx (default): randomized, never builds it")
    p.add_argument("--max-sequences", type=_positive_int,
                   help="use only the first N training pieces (default: all)")
    p.add_argument("--max-lag", type=_positive_int, help="longest prefix kept (default: longest piece)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (default auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the randomized solver (default 0)")
    p.add_argument("--out", help="write A, B and singular_values to this .npz file (default: not saved)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    p.set_defaults(func=cmd_lae)

    p = sub.add_parser("train", help="train an RNN (LAE pre-trained or random init) and write a run folder")
    p.add_argument("--dataset", help=DATASET_HELP + " (required unless --resume)")
    p.add_argument("--hidden", type=_positive_int, help="number of hidden units (required unless --resume)")
    p.add_argument("--init", choices=["lae", "random"], default="lae", help="initialisation (default lae)")
    p.add_argument("--epochs", type=_positive_int,
                   help="maximum number of epochs (default 20; with --resume: train up to this many)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initial weights, the batch order, dropout and input noise (default 0)")
    p.add_argument("--max-sequences", type=_positive_int,
                   help="use only the first N pieces of each split (default: all)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (default auto)")
    p.add_argument("--cell", choices=["rnn", "gru", "lstm"], default="rnn",
                   help="recurrent cell (default rnn, the paper's; gru/lstm only with --init random)")
    _add_training_options(p)
    p.add_argument("--out", help="run folder to create (required unless --resume)")
    p.add_argument("--resume", metavar="RUNDIR",
                   help="continue the run in RUNDIR from its last checkpoint, with its own settings: only --epochs, "
                   "--patience and --max-seconds may change (default: start a new run)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a run folder on a split: NLL, ACC, expected ACC, baselines")
    p.add_argument("rundir", help="a run folder written by lapmusic train")
    p.add_argument("--split", choices=["train", "valid", "test"], default="test",
                   help="which split to evaluate on (default test)")
    p.add_argument("--threshold", type=float,
                   help="decision threshold for the second ACC figure (default: final.json's, chosen on the "
                   "validation split; chosen now on it for runs without one)")
    p.add_argument("--device", help="auto, cpu or cuda (default: the run's device setting)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", help="train LAE and random init side by side and print a table")
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--hidden", required=True, type=_positive_int, help="number of hidden units (required)")
    p.add_argument("--epochs", type=_positive_int, default=20, help="maximum number of epochs per run (default 20)")
    p.add_argument("--seeds", type=_seed_list, default=[0],
                   help="N (seeds 0..N-1) or a list of seeds like 11,12,13 (default 1: seed 0 only)")
    p.add_argument("--max-sequences", type=_positive_int,
                   help="use only the first N pieces of each split (default: all)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (default auto)")
    _add_training_options(p)
    p.add_argument("--out", default="runs/compare",
                   help="parent folder for the run folders, created when missing; finished runs with identical settings "
                   "are reused (default runs/compare, relative to the current folder)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("generate", help="sample a piece from a trained run; write MIDI (and WAV)")
    p.add_argument("rundir", help="a run folder written by lapmusic train")
    p.add_argument("--steps", type=int, default=256, help="number of frames to generate (default 256)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="divides the logits: below 1 plays safer, above 1 wilder; 0 = deterministic, a key "
                   "sounds when p >= --threshold (default 1.0)")
    p.add_argument("--threshold", default="0.5",
                   help="with --temperature 0: a key sounds at p >= THRESHOLD; 'valid' = the threshold chosen on "
                   "the validation split (final.json) (default 0.5)")
    p.add_argument("--seed", type=int, default=0,
                   help="same seed, same run, same device: the same sample (default 0)")
    p.add_argument("--primer", default="none",
                   help="none, SPLIT:INDEX:FRAMES (e.g. test:0:16) or chord:60,64,67 "
                   "(also note names, chord:C4,E4,G4, and :N to hold it N frames) (default none: start from silence)")
    p.add_argument("--max-polyphony", type=int, help="keep at most K keys per frame, the most probable (default: no limit)")
    p.add_argument("--out", required=True, help="MIDI file to write (required)")
    p.add_argument("--wav", help="also render audio to this WAV file (default: no audio)")
    p.add_argument("--sample-rate", type=int, choices=[22050, 44100], default=22050,
                   help="WAV sample rate in Hz (default 22050)")
    p.add_argument("--soundfont", help="General MIDI .sf2 for FluidSynth (default: FluidR3_GM if installed, "
                   "else the one shipped with pretty_midi; or set $LAPMUSIC_SOUNDFONT)")
    p.add_argument("--step-seconds", type=float,
                   help="seconds per frame when played (default: the dataset's, e.g. 0.5 for JSB; else 0.25)")
    p.add_argument("--program", type=int, default=0, help="General MIDI program 0-127 (default 0 = acoustic grand piano)")
    p.add_argument("--velocity", type=int, default=90,
                   help="MIDI velocity (loudness) of every note, 1-127 (default 90)")
    p.add_argument("--separate-tracks", action="store_true",
                   help="put the primer and the continuation on two MIDI tracks (default: one track)")
    p.add_argument("--html", help="also write the piano-roll figure to this HTML file, opens offline (default: none)")
    p.add_argument("--device", help="cpu or cuda (default: the device the run was configured for)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("stats", help="musicality statistics of a run's samples or of MIDI/.npz files vs real pieces")
    p.add_argument("files", nargs="*", help="MIDI (.mid), .npz or .npy piano rolls, or folders of them "
                   "(instead of --run; needs --dataset)")
    p.add_argument("--run", metavar="RUNDIR", help="draw samples from this run folder and compare them with its dataset (default: none, "
                   "describe FILES instead)")
    p.add_argument("--dataset", help=DATASET_HELP + " (the real pieces files are compared with; required with "
                   "FILES, with --run the run's dataset is used)")
    p.add_argument("--split", choices=["train", "valid", "test"], default="train",
                   help="split the real pieces come from (default train)")
    p.add_argument("--samples", type=int, default=20, help="samples drawn from --run (default 20)")
    p.add_argument("--steps", type=int, default=64, help="frames per sample from --run (default 64)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    p.add_argument("--max-polyphony", type=_positive_int, help="keep at most K keys per frame (default: no cap)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--step-seconds", type=float,
                   help="seconds per frame when reading MIDI files (default 0.25)")
    p.add_argument("--device", help="cpu or cuda (default: the run's device setting)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    p.set_defaults(func=cmd_stats)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LapMusicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (OSError, RuntimeError) as exc:
        # A full disk, a permission or a read-only folder outside the library's own writers (torch.save
        # wraps ENOSPC in a RuntimeError): one clear line naming the folder, no traceback.
        from lapmusic.core.io import storage_cause, storage_error

        cause = storage_cause(exc)
        if cause is None:
            raise
        folder = os.path.dirname(os.path.abspath(cause.filename)) if cause.filename else "the output folder"
        print(f"error: {storage_error(folder, exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
