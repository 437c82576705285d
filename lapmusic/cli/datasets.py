"""``lapmusic datasets``: list datasets, make one from MIDI files (``add``), build or download one (``prepare``)."""

from __future__ import annotations

import argparse
import time

from lapmusic.cli.common import ProgressLine, emit, positive_seconds, steps_per_beat
from lapmusic.core.errors import LapMusicError


# --------------------------------------------------------------------------------------- datasets
def cmd_datasets(args: argparse.Namespace) -> int:
    """``lapmusic datasets``: the table of datasets, or the ``add`` / ``prepare`` action."""
    if args.datasets_command == "add":
        return cmd_datasets_add(args)
    if args.datasets_command == "prepare":
        return cmd_datasets_prepare(args)
    from lapmusic.data.benchmark import data_dir_problem
    from lapmusic.data.registry import describe_datasets

    progress = ProgressLine()
    rows = describe_datasets(progress=progress, load=not args.no_load)
    progress.close()
    problem = data_dir_problem()

    def human(result: dict) -> str:
        cells = []
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
            cells.append((row["key"], status, sizes_text, "-" if frames is None else str(frames), row["name"]))
        # Each column as wide as its longest cell, so a long user:NAME never runs into the next one.
        heads = ("key", "status", "train/valid/test", "frames (train)", "name")
        widths = [max(len(c[i]) for c in [heads, *cells]) for i in range(4)]

        def line(c) -> str:
            return (f"{c[0]:<{widths[0]}}  {c[1]:<{widths[1]}}  {c[2]:<{widths[2]}}  {c[3]:>{widths[3]}}  "
                    f"{c[4]}")

        lines = [line(heads)] + [line(c) for c in cells]
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
    from lapmusic.data.user import dataset_from_midi, save_user_dataset, slugify, user_dataset_path

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
    key = save_user_dataset(dataset, replace=args.replace)
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
    from lapmusic.data.catalog import BACH_CACHE_NAME, DATASETS
    from lapmusic.data.dataset import cache_dir
    from lapmusic.data.registry import dataset_key, load_dataset

    key = dataset_key(args.key)  # names are case-insensitive: BACH is bach
    if key not in DATASETS:
        raise LapMusicError(f"unknown dataset {args.key!r}; choose one of {', '.join(DATASETS)}")
    if key == "bach" and args.rebuild:
        (cache_dir() / BACH_CACHE_NAME).unlink(missing_ok=True)
    start = time.monotonic()
    progress = ProgressLine()
    dataset = load_dataset(key, progress=progress)
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


def add_datasets_parser(sub) -> None:
    """Add the ``datasets`` subcommand and its ``add`` and ``prepare`` actions to ``sub``."""
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
        "split 80/10/10 (train/valid/test) in the order given. Limits (see docs/reference.md): "
        "LAPMUSIC_MAX_UPLOAD_FILES (50 files), LAPMUSIC_MAX_UPLOAD_BYTES (16 MB in all), per file "
        "LAPMUSIC_MAX_MIDI_BYTES (8 MB), LAPMUSIC_MAX_MIDI_NOTES (200,000), LAPMUSIC_MAX_MIDI_SECONDS "
        "(1200 s), LAPMUSIC_MAX_MIDI_FRAMES (20,000).",
    )
    add.add_argument("name", metavar="NAME", help="dataset name; its key is user:NAME in lower case, "
                     "non-alphanumerics as '-' (e.g. 'My Songs' -> user:my-songs)")
    add.add_argument("files", metavar="FILES_OR_FOLDER", nargs="+", help="MIDI files and/or folders of them")
    grid = add.add_mutually_exclusive_group()
    grid.add_argument("--steps-per-beat", type=steps_per_beat, default=2,
                      help="frames per quarter note, following the file's tempo changes (default 2: eighth notes)")
    grid.add_argument("--step-seconds", type=positive_seconds,
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
