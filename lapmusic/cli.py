"""The ``lapmusic`` command: datasets, LAE pre-training, training, evaluation, sampling.

Every subcommand with ``--json`` prints exactly one JSON object as the last line of stdout;
progress lines go to stderr so that stdout stays machine-readable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable, Sequence

from . import __version__
from .errors import LapMusicError

DATASET_HELP = "dataset key: jsb, nottingham, musedata, pianomidi, bach (offline), or user:NAME"


class ProgressLine:
    """A one-line progress display on stderr: ``[ 42%] message``, redrawn in place on a terminal.

    Off a terminal (pipes, CI logs) it prints a new line at most every ``min_interval`` seconds.
    """

    def __init__(self, stream=None, min_interval: float = 1.0):
        self.stream = stream if stream is not None else sys.stderr
        self.min_interval = min_interval
        self._last = 0.0
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._open = False

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        done = fraction >= 1.0
        if not self._tty and not done and now - self._last < self.min_interval:
            return
        self._last = now
        line = f"[{100 * max(0.0, min(1.0, fraction)):3.0f}%] {message}"
        if self._tty:
            self.stream.write("\r\033[K" + line)
            self._open = not done
            if done:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def emit(result: dict, as_json: bool, human: Callable[[dict], str] | None = None) -> None:
    """Print ``result`` as one JSON line (``--json``) or as human text."""
    if as_json:
        print(json.dumps(result, sort_keys=True, default=_json_default))
    else:
        print(human(result) if human else json.dumps(result, indent=2, sort_keys=True, default=_json_default))


def _json_default(obj):
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(obj)


# --------------------------------------------------------------------------------------- early checks
# Names and paths a user typed are checked here, before torch is imported (about 1 s, more on a busy
# machine) and before any data is loaded or any file written, so that a typo answers at once.
def _check_dataset(key: str) -> None:
    """Raise DataError unless ``key`` names a known benchmark, ``bach`` or an existing ``user:NAME`` set."""
    from .data import DATASETS
    from .errors import DataError

    if key.startswith("user:"):
        from .userdata import user_dataset_keys, user_dataset_path

        if not user_dataset_path(key).is_file():
            known = ", ".join(user_dataset_keys()) or "none yet"
            raise DataError(f"no user dataset {key!r} (user datasets: {known}); make one from your MIDI files "
                            "first (lapmusic datasets add NAME FILES, or the app's upload)")
    elif key not in DATASETS:
        raise DataError(f"unknown dataset {key!r}; choose one of {', '.join(DATASETS)} or user:NAME")


def _check_run_dir(path: str) -> None:
    """Raise CheckpointError unless ``path`` is a folder holding a run's config.json (cheap, no torch)."""
    from pathlib import Path

    from .errors import CheckpointError

    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"run folder {folder} does not exist")
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} is not a run folder: it has no config.json")


def _check_file(path: str | None, what: str) -> None:
    import os

    if path is not None and not os.path.isfile(path):
        raise LapMusicError(f"{what} {path} does not exist")


def _check_device(name: str | None) -> None:
    """Only the spelling: whether CUDA is present is checked where torch is imported anyway."""
    if name is None:
        return
    if name not in ("auto", "cpu", "cuda") and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise LapMusicError(f"unknown device {name!r}; use auto, cpu or cuda")


# --------------------------------------------------------------------------------------- datasets
def cmd_datasets(args: argparse.Namespace) -> int:
    if args.datasets_command == "add":
        return cmd_datasets_add(args)
    if args.datasets_command == "prepare":
        return cmd_datasets_prepare(args)
    from .data import data_dir_problem, describe_datasets

    progress = ProgressLine()
    rows = describe_datasets(progress=progress, load=not args.no_load)
    progress.close()
    problem = data_dir_problem()

    def human(result: dict) -> str:
        lines = [f"{'key':<12}{'status':<11}{'train/valid/test':<20}{'frames (train)':>15}  name"]
        for row in result["datasets"]:
            sizes = row.get("split_sizes")
            sizes_text = "/".join(str(sizes[s]) for s in ("train", "valid", "test")) if sizes else "-"
            frames = row.get("frames", {}).get("train") if row.get("frames") else None
            if row.get("error"):
                status = "bad"
            elif row["key"] == "bach" and not row.get("built"):
                status = "offline"  # built from music21's corpus on first use
            else:
                status = "local" if row["available"] else "download"
            lines.append(
                f"{row['key']:<12}{status:<11}{sizes_text:<20}"
                f"{frames if frames is not None else '-':>15}  {row['name']}"
            )
        lines.append("local: on disk; download: fetched on first use (or set LAPMUSIC_DATA_DIR); "
                     "offline: built from music21 on first use (lapmusic datasets prepare bach); "
                     "bad: its file cannot be read")
        for row in result["datasets"]:
            if row.get("error"):
                where = f" ({row['file']})" if row.get("file") else ""
                lines.append(f"bad {row['key']}{where}: {row['error']}")
        if result["data_dir_problem"]:
            lines.append(f"note: {result['data_dir_problem']}")
        return "\n".join(lines)

    emit({"datasets": rows, "data_dir_problem": problem}, args.json, human)
    return 0


def cmd_datasets_add(args: argparse.Namespace) -> int:
    """``lapmusic datasets add NAME FILES_OR_FOLDERS...``: the app's upload, from the command line."""
    from pathlib import Path

    missing = [f for f in args.files if not Path(f).exists()]  # before the heavy imports: answers at once
    if missing:
        raise LapMusicError(f"no such file or folder: {', '.join(missing)}")
    from .userdata import dataset_from_midi, save_user_dataset, slugify, user_dataset_path

    path = user_dataset_path(args.name)
    if path.exists() and not args.replace:
        raise LapMusicError(f"a dataset user:{slugify(args.name)} exists already ({path}); "
                            "choose another name, or add --replace to overwrite it")
    progress = ProgressLine()
    if args.step_seconds is not None:
        grid = {"step_seconds": args.step_seconds, "steps_per_beat": None}
    else:
        grid = {"steps_per_beat": args.steps_per_beat}
    dataset, bad = dataset_from_midi(list(args.files), args.name, out_of_range=args.out_of_range,
                                     progress=progress, **grid)
    key = save_user_dataset(dataset)
    progress(1.0, f"saved {key}")
    progress.close()
    result = {
        "key": key, "path": str(user_dataset_path(key)),
        "split_sizes": {s: len(dataset.split(s)) for s in ("train", "valid", "test")},
        "step_seconds": dataset.step_seconds, "refused": [{"name": b.name, "reason": b.reason} for b in bad],
    }

    def human(r: dict) -> str:
        sizes = r["split_sizes"]
        lines = [f"made {r['key']} from {sum(sizes.values())} file(s): {sizes['train']} train / "
                 f"{sizes['valid']} valid / {sizes['test']} test, one frame = {r['step_seconds']:g} s; "
                 f"saved in {r['path']}"]
        if sizes["valid"] == 0:
            lines.append("note: no validation piece; training needs one: add more files")
        for refused in r["refused"]:
            lines.append(f"refused {refused['name']}: {refused['reason']}")
        return "\n".join(lines)

    emit(result, args.json, human)
    return 0


def cmd_datasets_prepare(args: argparse.Namespace) -> int:
    """``lapmusic datasets prepare [KEY]``: build (bach) or download and verify a dataset into the cache."""
    from .data import BACH_CACHE_NAME, DATASETS, cache_dir, load_dataset

    if args.key not in DATASETS:
        raise LapMusicError(f"unknown dataset {args.key!r}; choose one of {', '.join(DATASETS)}")
    if args.key == "bach" and args.rebuild:
        (cache_dir() / BACH_CACHE_NAME).unlink(missing_ok=True)
    start = time.monotonic()
    progress = ProgressLine()
    dataset = load_dataset(args.key, progress=progress)
    progress.close()
    summary = dataset.summary()
    result = {"key": dataset.key, "source": dataset.source, "split_sizes": summary["split_sizes"],
              "frames": summary["frames"], "seconds": round(time.monotonic() - start, 2)}

    def human(r: dict) -> str:
        sizes = r["split_sizes"]
        return (f"{r['key']} ready: {sizes['train']} / {sizes['valid']} / {sizes['test']} pieces "
                f"(train/valid/test) in {r['source']} ({r['seconds']:.1f} s)")

    emit(result, args.json, human)
    return 0


def _steps_per_beat(text: str) -> int:
    value = _positive_int(text)
    if value > 96:
        raise argparse.ArgumentTypeError(f"must be 1..96, got {text}")
    return value


def _positive_seconds(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _add_datasets_parser(sub) -> None:
    p = sub.add_parser(
        "datasets", help="list datasets (default), make one from your MIDI files (add), build/download one (prepare)",
        description="Without a subcommand: list every dataset, whether it is available locally, split sizes "
        "and frames; a dataset whose file cannot be read is listed as bad, with the reason.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--no-load", action="store_true", help="do not load files to count frames (faster)")
    p.set_defaults(func=cmd_datasets, datasets_command=None)
    actions = p.add_subparsers(dest="datasets_command", metavar="ACTION")

    add = actions.add_parser(
        "add", help="make dataset user:NAME from your MIDI files, as the app's upload does",
        description="Make the dataset user:NAME from MIDI files and folders (their .mid/.midi files), with the "
        "app's checks and limits: every file that cannot be used is listed with the reason, the others are "
        "split 80/10/10 (train/valid/test) in the order given. Limits (see docs/app.md): "
        "LAPMUSIC_MAX_UPLOAD_FILES (50 files), LAPMUSIC_MAX_UPLOAD_BYTES (16 MB in all), per file "
        "LAPMUSIC_MAX_MIDI_BYTES (8 MB), LAPMUSIC_MAX_MIDI_NOTES (200,000), LAPMUSIC_MAX_MIDI_SECONDS "
        "(1200 s), LAPMUSIC_MAX_MIDI_FRAMES (20,000).",
    )
    add.add_argument("name", metavar="NAME", help="dataset name; its key is user:NAME in lower case, "
                     "non-alphanumerics as '-' (e.g. 'My Songs' -> user:my-songs)")
    add.add_argument("files", metavar="FILES_OR_FOLDER", nargs="+", help="MIDI files and/or folders of them")
    grid = add.add_mutually_exclusive_group()
    grid.add_argument("--steps-per-beat", type=_steps_per_beat, default=2,
                      help="frames per quarter note, following the file's tempo changes (default 2: eighth notes)")
    grid.add_argument("--step-seconds", type=_positive_seconds,
                      help="instead: frames of this many seconds (default: unset, frames follow the beat)")
    add.add_argument("--out-of-range", choices=["fold", "drop"], default="fold",
                     help="pitches outside the piano (MIDI 21-108): move by octaves into range, or drop "
                     "(default fold)")
    add.add_argument("--replace", action="store_true", help="overwrite an existing user:NAME (default: refuse)")
    add.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    add.set_defaults(func=cmd_datasets)

    prepare = actions.add_parser(
        "prepare", help="build the offline Bach set (or download a benchmark) into the cache now",
        description="Build the offline Bach set from music21's corpus (about a minute on a 2-core CPU) or "
        "download and verify a benchmark, into the cache folder (LAPMUSIC_CACHE_DIR), with progress, so "
        "that the first page or training does not wait for it. Does nothing when it is cached already.",
    )
    prepare.add_argument("key", nargs="?", default="bach", metavar="KEY",
                         help="bach (default), jsb, nottingham, musedata or pianomidi")
    prepare.add_argument("--rebuild", action="store_true",
                         help="bach: build again even when cached (default: reuse the cache)")
    prepare.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    prepare.set_defaults(func=cmd_datasets)


# --------------------------------------------------------------------------------------- lae
def cmd_lae(args: argparse.Namespace) -> int:
    _check_dataset(args.dataset)
    _check_device(args.device)

    from .data import load_dataset
    from .lae import fit_lae

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
def _add_training_options(p: argparse.ArgumentParser) -> None:
    """Training settings shared by ``train`` and ``compare`` (defaults: lapmusic.config.TrainConfig)."""
    p.add_argument("--lr", type=float, help="learning rate (default 1e-3)")
    p.add_argument("--batch-size", type=_positive_int, help="pieces per mini-batch (default 32)")
    p.add_argument("--bptt", type=_positive_int, help="truncated-BPTT window in frames (default 100)")
    p.add_argument("--optimizer", choices=["adam", "sgd"], help="adam (default) or sgd with momentum 0.9")
    p.add_argument("--dropout", type=float, help="dropout on the hidden states (default 0)")
    p.add_argument("--weight-decay", type=float, help="L2 weight decay (default 0)")
    p.add_argument("--patience", type=_positive_int,
                   help="stop after this many epochs without a better validation NLL (default 5)")
    p.add_argument("--lae-solver", choices=["exact", "approx"], help="LAE solver for --init lae (default approx)")
    p.add_argument("--alpha", type=float,
                   help="input scale of the LAE init (default: chosen from the data so that 99%% of the "
                   "initial pre-activations lie in [-1.5, 1.5]; their median is then about 0.1)")
    p.add_argument("--max-train-sequences", type=_positive_int,
                   help="train on a fixed random subset of N training pieces, the same for every seed (default: all)")
    p.add_argument("--lae-file", dest="lae_path", metavar="FILE",
                   help="for --init lae: reuse an LAE saved by `lapmusic lae --out FILE`, p must equal --hidden "
                   "(default: fit the LAE in the run)")
    p.add_argument("--output", choices=["bernoulli", "nade"],
                   help="output layer (default bernoulli: one independent sigmoid per key; nade: RNN-NADE, "
                   "the keys of a frame drawn low to high, each conditioned on the lower ones and the state)")
    p.add_argument("--nade-hidden", type=_positive_int,
                   help="hidden units of the NADE output (default 64; only with --output nade)")

    p.add_argument("--lr-patience", type=_non_negative_int,
                   help="multiply the learning rate by 0.5 after this many epochs without a better validation "
                   f"NLL (default {_default('lr_patience')})")
    p.add_argument("--lae-max-lag", type=_positive_int,
                   help="for --init lae: keep only the last L frames of every prefix in the LAE's data matrix "
                   "(default: the longest piece, or with --lae-decay below 1 the lag where GAMMA**L < 1e-12)")
    p.add_argument("--lae-decay", type=float, metavar="GAMMA",
                   help="for --init lae: weight lag k of the LAE's data matrix by GAMMA**k, 0 < GAMMA <= 1; "
                   f"1 is the paper's unweighted LAE (default {_default('lae_decay')})")
    p.add_argument("--rec-radius", type=float, metavar="R",
                   help="scale the recurrent matrix to spectral radius exactly R, for either init (default: as "
                   "initialised: about 0.98 for the LAE's B, about 0.58 for PyTorch's random init)")
    p.add_argument("--readout-start", choices=["fit", "constant", "zero"],
                   help="for --init lae: readout fitted on the LAE states (fit), key frequencies only "
                   f"(constant) or zeros (default {_default('readout_start')})")
    p.add_argument("--readout-ridge", type=float,
                   help="ridge of the least-squares readout fit, relative to the mean state energy "
                   f"(default {_default('readout_ridge')})")
    p.add_argument("--readout-steps", type=_non_negative_int,
                   help=f"L-BFGS logistic steps after the least-squares readout (default {_default('readout_steps')})")
    p.add_argument("--alpha-target", type=float,
                   help="LAE init: 99%% of the initial pre-activations within [-T, T] "
                   f"(default {_default('alpha_target')}; ignored with --alpha)")


_TRAINING_OPTIONS = ("lr", "batch_size", "bptt", "optimizer", "dropout", "weight_decay", "patience",
                     "lae_solver", "alpha", "max_train_sequences", "lae_path", "lr_patience", "lae_max_lag",
                     "lae_decay", "rec_radius", "readout_start", "readout_ridge", "readout_steps", "alpha_target",
                     "output", "nade_hidden")


# TrainConfig's defaults that help texts quote, written out so that --help imports no torch
# (tests/test_recipes.py checks them against TrainConfig).
RECIPE_DEFAULTS = {"lr_patience": 1, "lae_decay": 0.3, "readout_start": "fit", "readout_ridge": 1.0,
                   "readout_steps": 20, "alpha_target": 1.5}


def _default(name: str):
    return RECIPE_DEFAULTS[name]


def _training_config(args: argparse.Namespace, **fields):
    from .config import TrainConfig

    values = {name: getattr(args, name) for name in _TRAINING_OPTIONS if getattr(args, name, None) is not None}
    values.update({k: v for k, v in fields.items() if v is not None})
    config = TrainConfig(**values)
    config.validate()
    return config


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


def cmd_train(args: argparse.Namespace) -> int:
    _check_device(args.device)
    _check_file(args.lae_path, "LAE file")
    if args.resume:
        _check_run_dir(args.resume)
    else:
        if not args.dataset or not args.hidden or not args.out:
            raise LapMusicError("a new run needs --dataset, --hidden and --out (or --resume RUNDIR)")
        _check_dataset(args.dataset)

    from .train import train

    if args.resume:
        config = None
        if args.epochs is not None or args.patience is not None:
            from pathlib import Path

            from .train import _config_from_run

            config = _config_from_run(Path(args.resume))
            config.epochs = args.epochs or config.epochs
            config.patience = args.patience or config.patience
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

    from .metrics import baselines
    from .results import evaluate, load_run, validation_threshold
    from .train import _acc_method, run_split

    run = load_run(args.rundir, device=args.device)
    progress = ProgressLine()
    progress(0.0, f"loading dataset {run.config.dataset}")
    from .train import _load_dataset

    dataset = _load_dataset(run.config.dataset)
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
                  output=run.config.output, acc_method=_acc_method(run.config))

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

    from .results import compare_runs
    from .train import train

    run_dirs = []
    jobs = [(seed, init) for seed in args.seeds for init in ("lae", "random")]
    for number, (seed, init) in enumerate(jobs):
        config = _training_config(args, dataset=args.dataset, hidden=args.hidden, init=init, epochs=args.epochs,
                                  seed=seed, max_sequences=args.max_sequences, device=args.device)
        suffix = "-nade" if config.output == "nade" else ""  # Bernoulli keeps the folder names it always had
        run_dir = parent / f"{args.dataset.replace(':', '_')}-h{args.hidden}-e{args.epochs}-{init}-s{seed}{suffix}"
        run_dirs.append(run_dir)
        if (run_dir / "final.json").exists():
            saved = json_module.loads((run_dir / "config.json").read_text())
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


# --------------------------------------------------------------------------------------- generate
def cmd_generate(args: argparse.Namespace) -> int:
    import math
    import warnings

    # Check what the user typed before loading anything.
    if args.steps < 1:
        raise LapMusicError(f"--steps must be at least 1, got {args.steps}")
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise LapMusicError(f"--temperature must be a number >= 0 (0 = deterministic), got {args.temperature}")
    if args.max_polyphony is not None and args.max_polyphony < 1:
        raise LapMusicError(f"--max-polyphony must be at least 1, got {args.max_polyphony}")
    if args.step_seconds is not None and not (math.isfinite(args.step_seconds) and args.step_seconds > 0):
        raise LapMusicError(f"--step-seconds must be a positive number of seconds, got {args.step_seconds}")
    if not 0 <= args.program <= 127:
        raise LapMusicError(f"--program must be a General MIDI program 0-127, got {args.program}")
    if not 1 <= args.velocity <= 127:
        raise LapMusicError(f"--velocity must be 1-127, got {args.velocity}")
    _check_run_dir(args.rundir)
    _check_device(args.device)
    _check_file(args.soundfont, "soundfont")

    from .audio import render_wav
    from .io import atomic_write_bytes, atomic_write_text
    from .sample import sample_run
    from .results import load_run

    run = load_run(args.rundir, device=args.device)
    threshold = _greedy_threshold(args.threshold, run)
    progress = ProgressLine()
    try:
        (sample,) = sample_run(
            run, steps=args.steps, temperature=args.temperature, primer=args.primer,
            max_polyphony=args.max_polyphony, seed=args.seed, step_seconds=args.step_seconds,
            program=args.program, velocity=args.velocity, separate_tracks=args.separate_tracks,
            progress=progress, threshold=threshold,
        )
    finally:
        progress.close()
    atomic_write_bytes(args.out, sample.midi_bytes())
    result = {
        "midi": args.out,
        "wav": None,
        "html": None,
        "notes": sample.notes,
        "frames": int(sample.roll.shape[0]),
        "primer_frames": sample.primer_frames,
        "generated_frames": args.steps,
        "duration_seconds": round(sample.seconds, 6),
        "step_seconds": sample.step_seconds,
        "renderer": None,
        "silent": sample.notes == 0,
        "warning": None,
        "run": str(args.rundir),
        "dataset": run.config.dataset,
        "output": run.config.output,
        "device": str(run.device),
        "seed": args.seed,
        "temperature": args.temperature,
        "threshold": threshold,
        "primer": args.primer,
    }
    if args.wav:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # reported below as one "warning:" line instead
            audio = render_wav(sample.midi, args.sample_rate, args.soundfont, min_seconds=sample.seconds)
        audio.save(args.wav)
        if audio.warning:
            print(f"warning: {audio.warning}", file=sys.stderr)
        result.update(wav=args.wav, renderer=audio.renderer, silent=audio.silent, warning=audio.warning,
                      sample_rate=audio.sample_rate, soundfont=audio.soundfont)
    if args.html:
        from .plots import piano_roll_figure

        title = f"{run.config.dataset}, {run.config.init} init, T = {args.temperature:g}, seed {args.seed}"
        figure = piano_roll_figure(sample.roll, primer_frames=sample.primer_frames,
                                   step_seconds=sample.step_seconds, title=title)
        atomic_write_text(args.html, figure.to_html(include_plotlyjs=True, full_html=True))
        result["html"] = args.html

    def human(r: dict) -> str:
        lines = [f"wrote {r['midi']}: {r['notes']} notes, {r['duration_seconds']:.1f} s "
                 f"({r['primer_frames']} primer + {r['generated_frames']} generated frames)"]
        if r["wav"]:
            lines.append(f"wrote {r['wav']} ({r['renderer']}, {r['sample_rate']} Hz"
                         + (", silent: the sample has no notes" if r["silent"] else "") + ")")
        elif r["silent"]:
            lines.append("the sample has no notes (try a higher --temperature or a primer)")
        if r["html"]:
            lines.append(f"wrote {r['html']} (piano roll)")
        return "\n".join(lines)

    emit(result, args.json, human)
    return 0


# --------------------------------------------------------------------------------------- stats
def cmd_stats(args: argparse.Namespace) -> int:
    if not args.run and not args.files:
        raise LapMusicError("give a run folder (--run RUNDIR) or MIDI/.npz files to describe")
    if args.steps < 1 or args.samples < 1:
        raise LapMusicError("--steps and --samples must be at least 1")
    if args.run:
        _check_run_dir(args.run)
    if args.dataset:
        _check_dataset(args.dataset)
    _check_device(args.device)

    import numpy as np

    from . import stats

    if args.run:
        from .results import load_run

        run = load_run(args.run, device=args.device)
        if args.files:
            raise LapMusicError("give either --run (its samples are drawn) or files, not both")
        result = stats.sample_stats(run, n_samples=args.samples, steps=args.steps, temperature=args.temperature,
                                    seed=args.seed, max_polyphony=args.max_polyphony, split=args.split)
    else:
        if not args.dataset:
            raise LapMusicError("files need --dataset KEY: the real pieces they are compared with")
        from .data import load_dataset

        rolls = stats.load_rolls(args.files, step_seconds=args.step_seconds)
        dataset = load_dataset(args.dataset)
        frames = int(np.median([len(r) for r in rolls]))
        reference = stats.reference_excerpts(dataset.split(args.split), max(frames, 1))
        result = stats.compare(rolls, reference)
        result["settings"] = {"files": [str(f) for f in args.files], "dataset": args.dataset, "split": args.split,
                              "excerpt_frames": frames}

    def human(r: dict) -> str:
        rows = stats.table_rows(r)
        lines = [f"{r['samples']['pieces']} sample(s) vs {r['reference']['pieces']} real excerpts "
                 f"({r['settings'].get('dataset')}, {r['settings'].get('split')} split)",
                 f"{'statistic':<40}{'samples':>9}{'real mean':>11}{'real 10-90 %':>16}{'inside':>8}"]
        for row in rows:
            lines.append(f"{row['statistic']:<40}{row['samples']:>9}{row['real (mean)']:>11}"
                         f"{row['real (10-90 %)']:>16}{row['inside']:>8}")
        hist = r["samples"]["note_length_hist"]
        real = r["reference"]["note_length_hist"]
        if hist and real:
            lines.append("note lengths (frames " + "/".join(stats.NOTE_BIN_LABELS) + "): samples "
                         + " ".join(f"{100 * h:.0f}%" for h in hist) + ", real " + " ".join(f"{100 * h:.0f}%" for h in real))
        return "\n".join(lines)

    emit(result, args.json, human)
    return 0


# --------------------------------------------------------------------------------------- parser
def _greedy_threshold(text: str, run) -> float:
    """``--threshold``: a probability, or ``valid`` for the run's validation-chosen one (final.json)."""
    if text == "valid":
        if not run.final or run.final.get("threshold") is None:
            raise LapMusicError("--threshold valid needs a finished run whose final.json has a threshold "
                                "(runs trained before this option): give a number instead")
        return float(run.final["threshold"])
    try:
        value = float(text)
    except ValueError:
        raise LapMusicError(f"--threshold takes a probability or 'valid', not {text!r}") from None
    if not 0 < value < 1:
        raise LapMusicError(f"--threshold must be between 0 and 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _seed_list(text: str) -> list[int]:
    """``N`` -> seeds ``0..N-1``; ``11,12,13`` -> those seeds (a single seed by value: ``7,``)."""
    parts = [part.strip() for part in text.split(",")]
    try:
        if len(parts) == 1:
            count = int(parts[0])
            if count < 1:
                raise ValueError
            return list(range(count))
        seeds = [int(part) for part in parts if part]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds takes a count N (seeds 0..N-1) or a comma-separated list like 11,12,13, not {text!r}"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds needs distinct seeds, got {text!r}")
    return seeds


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


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
                   help="seed of the initial weights, the batch order and dropout (default 0)")
    p.add_argument("--max-sequences", type=_positive_int,
                   help="use only the first N pieces of each split (default: all)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (default auto)")
    p.add_argument("--cell", choices=["rnn", "gru", "lstm"], default="rnn",
                   help="recurrent cell (default rnn, the paper's; gru/lstm only with --init random)")
    _add_training_options(p)
    p.add_argument("--out", help="run folder to create (required unless --resume)")
    p.add_argument("--resume", metavar="RUNDIR",
                   help="continue the run in RUNDIR from its last checkpoint (default: start a new run)")
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
        from .io import storage_cause, storage_error

        cause = storage_cause(exc)
        if cause is None:
            raise
        folder = os.path.dirname(os.path.abspath(cause.filename)) if cause.filename else "the output folder"
        print(f"error: {storage_error(folder, exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
