"""``lapmusic train`` (a run folder), ``lapmusic evaluate`` (a run on a split) and ``lapmusic compare`` (LAE and
random init side by side, over seeds)."""

from __future__ import annotations

import argparse
import sys

from lapmusic.cli.common import (
    DATASET_HELP,
    ProgressLine,
    check_dataset,
    check_device,
    check_file,
    check_run_dir,
    emit,
    positive_int,
    seed_list,
)
from lapmusic.cli.options import add_training_options, as_options, training_config
from lapmusic.core.errors import LapMusicError


# --------------------------------------------------------------------------------------- train
def _final_text(result: dict) -> str:
    """The human summary of a finished (or cancelled) ``train`` run."""
    if result.get("state") == "cancelled":
        return f"cancelled after epoch {result.get('epoch')}; resume with --resume {result.get('run_dir')}"

    def number(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    return (f"test NLL {number(result.get('nll'))}  ACC {number(result.get('acc'), 2)}%  "
            f"expected ACC {number(result.get('expected_acc'), 2)}%  ({result.get('frames')} frames, "
            f"{result.get('output', 'bernoulli')} output)\n"
            f"best epoch {result.get('best_epoch')} of {result.get('epochs')} ({result.get('stopped')}), "
            f"pre-training {number(result.get('pretrain_seconds'), 1)} s, training {number(result.get('seconds'), 1)} s "
            f"on {result.get('device')}"
            + "".join(f"\nnote: {as_options(note, ['nade_vocab'])}" for note in result.get("notes", [])))


def _changed_on_resume(args: argparse.Namespace) -> list[str]:
    """The options of ``train`` given with a value other than their default that a resume would not apply.

    A resumed run keeps its own configuration (config.json): silently training with the old learning rate
    after ``--resume R --lr X`` would mislead, so such options are refused instead.
    """
    from lapmusic.training.config import RESUMABLE_CHANGES

    parser = argparse.ArgumentParser()
    add_training_parsers(parser.add_subparsers(dest="command"))
    defaults = vars(parser.parse_args(["train"]))
    kept = {"resume", "json", "func", "command", *RESUMABLE_CHANGES}
    return ["--" + name.replace("_", "-") for name, default in defaults.items()
            if name not in kept and getattr(args, name) != default]


def _new_run(args: argparse.Namespace, progress: ProgressLine):
    """A new run's config and its dataset (loaded once; None when nothing depends on it): a preset's chord
    vocabulary fitted to the chords found
    (:func:`lapmusic.training.presets.resolve`), and a note on stderr when the vocabulary asks for more chords
    than the training pieces have (:func:`lapmusic.training.build.vocabulary_note`)."""
    from lapmusic.training.build import load_run_dataset, run_split, vocabulary_note
    from lapmusic.training.presets import distinct_chords

    fields = dict(dataset=args.dataset, hidden=args.hidden, init=args.init, epochs=args.epochs, seed=args.seed,
                  max_sequences=args.max_sequences, device=args.device, cell=args.cell)
    config = training_config(args, **fields)
    if not args.preset and not config.model.nade_vocab:
        return config, None  # nothing to fit to the data: train() loads it
    progress(0.0, f"loading dataset {config.dataset}")
    dataset = load_run_dataset(config.dataset)
    pieces = run_split(config, "train", dataset)
    if args.preset:
        config = training_config(args, train_chords=distinct_chords(pieces), **fields)
    note = vocabulary_note(config, pieces)
    if note:
        progress.close()
        print("note: " + as_options(note, ["nade_vocab"]), file=sys.stderr)
    return config, dataset


def cmd_train(args: argparse.Namespace) -> int:
    """Train a new run into ``--out``, or continue ``--resume RUNDIR`` with its own settings."""
    check_device(args.device)
    check_file(args.lae_path, "LAE file")
    if args.resume:
        check_run_dir(args.resume)
    else:
        if not args.dataset or not (args.hidden or args.preset) or not args.out:
            raise LapMusicError("a new run needs --dataset, --hidden (or --preset) and --out (or --resume RUNDIR)")
        args.dataset = check_dataset(args.dataset)  # as registered: JSB -> jsb

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
        run_dir = args.out
    progress = ProgressLine()
    dataset = None
    if not args.resume:
        config, dataset = _new_run(args, progress)
    try:
        result = train(config, run_dir, progress=progress, resume=bool(args.resume), dataset=dataset)
    finally:
        progress.close()
    result = dict(result, run_dir=str(run_dir))
    emit(result, args.json, _final_text)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """NLL and accuracies of a run folder on a split, beside the copy-previous and key-frequency baselines."""
    check_run_dir(args.rundir)
    check_device(args.device)

    from lapmusic.model.metrics import baselines
    from lapmusic.training.build import run_split
    from lapmusic.training.results import evaluate, load_run, validation_threshold

    run = load_run(args.rundir, device=args.device)
    progress = ProgressLine()
    progress(0.0, f"loading dataset {run.config.dataset}")
    from lapmusic.training.build import load_run_dataset, run_data_change

    dataset = load_run_dataset(run.config.dataset)
    changed = run_data_change(args.rundir, dataset)
    if changed and not args.changed_data:
        progress.close()
        raise LapMusicError(f"{changed}; its metrics on other data would not be the run's. Put the dataset back "
                            "as it was, or add --changed-data to evaluate it on the data as it is now")
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
                  output=run.config.model.output, acc_method=run.model.head.acc_method(), data_changed=changed)

    def human(r: dict) -> str:
        def number(value, digits=3):
            return "-" if value is None else f"{value:.{digits}f}"

        b = r["baselines"]
        return (f"{r['split']}: NLL {number(r['nll'])}  ACC {number(r['acc'], 2)}% (p >= 0.5), "
                f"{number(r.get('acc_tuned'), 2)}% (p >= {number(r.get('threshold'), 3)}, threshold from "
                f"{r['threshold_source']})  expected ACC "
                f"{number(r['expected_acc'], 2)}%  ({r['frames']} frames, {r['checkpoint']} model of epoch "
                f"{r['epoch']}, {r['output']} output; {r['acc_method']})\nbaselines: copy-previous-frame ACC "
                f"{number(b['copy_previous_acc'], 2)}%, per-key frequency NLL {number(b['marginal_nll'])}"
                + (f"\nnote: {r['data_changed']}" if r["data_changed"] else ""))

    emit(result, args.json, human)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Train (or reuse) an LAE and a random run per seed under ``--out`` and print their mean +- std."""
    import json as json_module
    from pathlib import Path

    args.dataset = check_dataset(args.dataset)
    check_device(args.device)
    check_file(args.lae_path, "LAE file")
    if args.out:
        parent = Path(args.out)
    else:
        from lapmusic.jobs.runs import default_runs_dir

        parent = default_runs_dir() / "compare"  # beside the app's runs when LAPMUSIC_RUNS_DIR says where
    print(f"run folders go under {parent.resolve()} (--out)", file=sys.stderr)

    from lapmusic.training.config import TrainConfig
    from lapmusic.training.results import compare_runs
    from lapmusic.training.train import train

    run_dirs = []
    jobs = [(seed, init) for seed in args.seeds for init in ("lae", "random")]
    chords = None
    if args.preset:  # the preset's chord vocabulary fitted to the chords found, as in train
        from lapmusic.training.build import load_run_dataset, run_split
        from lapmusic.training.presets import distinct_chords

        first = training_config(args, dataset=args.dataset, hidden=args.hidden, epochs=args.epochs,
                                max_sequences=args.max_sequences, device=args.device)
        chords = distinct_chords(run_split(first, "train", load_run_dataset(args.dataset)))
    for number, (seed, init) in enumerate(jobs):
        config = training_config(args, dataset=args.dataset, hidden=args.hidden, init=init, epochs=args.epochs,
                                  seed=seed, max_sequences=args.max_sequences, device=args.device,
                                  train_chords=chords)
        model = config.model
        suffix = "-nade" if model.output == "nade" else ""  # Bernoulli: unsuffixed, so existing folders are reused
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
                   out=str(parent), output=config.model.output, run_dirs=[str(d) for d in run_dirs])

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


# --------------------------------------------------------------------------------------- parsers
def add_training_parsers(sub) -> None:
    """Add the ``train``, ``evaluate`` and ``compare`` subcommands to ``sub`` (the subparsers of ``lapmusic``)."""
    p = sub.add_parser("train", help="train an RNN (LAE pre-trained or random init) and write a run folder")
    p.add_argument("--dataset", help=DATASET_HELP + " (required unless --resume)")
    p.add_argument("--hidden", type=positive_int, help="number of hidden units (required unless --resume)")
    p.add_argument("--init", choices=["lae", "random"], default="lae", help="initialisation (default lae)")
    p.add_argument("--epochs", type=positive_int,
                   help="maximum number of epochs (default 20; with --resume: train up to this many)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initial weights, the batch order, dropout and input noise (default 0)")
    p.add_argument("--max-sequences", type=positive_int,
                   help="use only the first N pieces of each split (default: all)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (default auto)")
    p.add_argument("--cell", choices=["rnn", "gru", "lstm"], default="rnn",
                   help="recurrent cell (default rnn, the paper's; gru/lstm only with --init random)")
    add_training_options(p)
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
    p.add_argument("--changed-data", action="store_true",
                   help="evaluate even when the run's dataset changed since it was trained (its data.json "
                   "fingerprint; the result then says what changed); default: refuse")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", help="train LAE and random init side by side and print a table")
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--hidden", required=True, type=positive_int, help="number of hidden units (required)")
    p.add_argument("--epochs", type=positive_int, default=20, help="maximum number of epochs per run (default 20)")
    p.add_argument("--seeds", type=seed_list, default=[0],
                   help="N (seeds 0..N-1) or a list of seeds like 11,12,13 (default 1: seed 0 only)")
    p.add_argument("--max-sequences", type=positive_int,
                   help="use only the first N pieces of each split (default: all)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (default auto)")
    add_training_options(p)
    p.add_argument("--out",
                   help="parent folder for the run folders, created when missing; finished runs with identical settings "
                   "are reused (default: compare in $LAPMUSIC_RUNS_DIR when set, else runs/compare in the current "
                   "folder)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    p.set_defaults(func=cmd_compare)
