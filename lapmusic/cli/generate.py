"""``lapmusic generate`` (sample a trained run to MIDI, WAV, HTML) and ``lapmusic stats`` (musicality of samples)."""

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
    greedy_threshold,
    positive_int,
)
from lapmusic.core.errors import LapMusicError


# --------------------------------------------------------------------------------------- generate
def variation_path(path: str | None, index: int, count: int) -> str | None:
    """Where variation ``index`` (from 0) of ``count`` is written: ``path`` itself for one, else
    ``song.mid`` -> ``song-1.mid``, ``song-2.mid``, ..."""
    if path is None or count == 1:
        return path
    from pathlib import Path

    target = Path(path)
    return str(target.with_name(f"{target.stem}-{index + 1}{target.suffix}"))


def check_output(path: str | None, option: str) -> None:
    """Refuse, before any work, an output whose folder does not exist or that names a folder: nothing is
    created outside what the user named."""
    from pathlib import Path

    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise LapMusicError(f"{option} {path} is a folder; give a file name, e.g. {target / 'sample'}"
                            f"{'.mid' if option == '--out' else target.suffix or '.' + option[2:]}")
    if not target.parent.is_dir():
        raise LapMusicError(f"{option} {path}: the folder {target.parent} does not exist; create it first "
                            "or write somewhere else (nothing was written)")


def training_goes_on(run) -> bool:
    """Whether a process is training the run now (its status says running and its writer is alive)."""
    from lapmusic.jobs.runs import RUNNING, live_state

    return run.status.get("state") == RUNNING and live_state(run.run_dir, run.status) == RUNNING


def cmd_generate(args: argparse.Namespace) -> int:
    """Sample pieces from a run folder and write their MIDI (and, when asked, WAV and piano-roll HTML)."""
    import math
    import warnings

    from lapmusic.sampling.limits import MAX_VARIATIONS

    # Check what the user typed before loading anything.
    if args.steps < 1:
        raise LapMusicError(f"--steps must be at least 1, got {args.steps}")
    if not 1 <= args.variations <= MAX_VARIATIONS:
        raise LapMusicError(f"--variations must be 1 to {MAX_VARIATIONS}, got {args.variations}")
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
    check_run_dir(args.rundir)
    check_device(args.device)
    check_file(args.soundfont, "soundfont")
    for option, path in (("--out", args.out), ("--wav", args.wav), ("--html", args.html)):
        check_output(path, option)

    from lapmusic.core.io import atomic_write_bytes, atomic_write_text
    from lapmusic.sampling.audio import render_wav
    from lapmusic.sampling.sample import sample_run
    from lapmusic.training.results import load_run

    run = load_run(args.rundir, device=args.device)
    threshold = greedy_threshold(args.threshold, run)
    progress = ProgressLine()
    try:
        samples = sample_run(
            run, steps=args.steps, temperature=args.temperature, primer=args.primer,
            max_polyphony=args.max_polyphony, seed=args.seed, step_seconds=args.step_seconds,
            program=args.program, velocity=args.velocity, separate_tracks=args.separate_tracks,
            progress=progress, threshold=threshold, n_samples=args.variations,
        )
    finally:
        progress.close()
    training = training_goes_on(run)
    count = len(samples)
    variations = []
    for index, sample in enumerate(samples):
        written = {"midi": variation_path(args.out, index, count), "wav": None, "html": None,
                   "notes": sample.notes, "silent": sample.notes == 0, "renderer": None, "warning": None}
        atomic_write_bytes(written["midi"], sample.midi_bytes())
        if args.wav:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # reported below as one "warning:" line instead
                audio = render_wav(sample.midi, args.sample_rate, args.soundfont, min_seconds=sample.seconds)
            written["wav"] = variation_path(args.wav, index, count)
            audio.save(written["wav"])
            if audio.warning:
                print(f"warning: {audio.warning}", file=sys.stderr)
            written.update(renderer=audio.renderer, silent=audio.silent, warning=audio.warning,
                           sample_rate=audio.sample_rate, soundfont=audio.soundfont)
        if args.html:
            from lapmusic.plots import piano_roll_figure

            title = (f"{run.config.dataset}, {run.config.init} init, T = {args.temperature:g}, seed {args.seed}"
                     + (f", variation {index + 1}" if count > 1 else ""))
            figure = piano_roll_figure(sample.roll, primer_frames=sample.primer_frames,
                                       step_seconds=sample.step_seconds, title=title)
            written["html"] = variation_path(args.html, index, count)
            atomic_write_text(written["html"], figure.to_html(include_plotlyjs=True, full_html=True))
        variations.append(written)
    first = samples[0]
    signature = first.midi.time_signature_changes[0] if first.midi.time_signature_changes else None
    result = {
        **variations[0],
        "variations": variations,
        "frames": int(first.roll.shape[0]),
        "primer_frames": first.primer_frames,
        "generated_frames": args.steps,
        "duration_seconds": round(first.seconds, 6),
        "step_seconds": first.step_seconds,
        "tempo_qpm": round(first.midi.get_tempo_changes()[1][0], 3),
        "time_signature": f"{signature.numerator}/{signature.denominator}" if signature else "4/4",
        "run": str(args.rundir),
        "dataset": run.config.dataset,
        "output": run.config.model.output,
        "device": str(run.device),
        "seed": args.seed,
        "temperature": args.temperature,
        "threshold": threshold,
        "primer": args.primer,
        "epoch": run.epoch,
        "checkpoint": run.checkpoint,
        "training": training,
    }

    def human(r: dict) -> str:
        lines = []
        for v in r["variations"]:
            lines.append(f"wrote {v['midi']}: {v['notes']} notes, {r['duration_seconds']:.1f} s "
                         f"({r['primer_frames']} primer + {r['generated_frames']} generated frames, "
                         f"{r['time_signature']} at {r['tempo_qpm']:g} qpm)")
            if v["wav"]:
                lines.append(f"wrote {v['wav']} ({v['renderer']}, {v['sample_rate']} Hz"
                             + (", silent: the sample has no notes" if v["silent"] else "") + ")")
            elif v["silent"]:
                lines.append("the sample has no notes (try a higher --temperature or a primer)")
            if v["html"]:
                lines.append(f"wrote {v['html']} (piano roll)")
        model = f"the model of epoch {r['epoch']} ({'best so far' if r['checkpoint'] == 'best' else 'last saved'})"
        if r["training"]:
            lines.append(f"used {model}: the run is still training, so later epochs may sound different")
        else:
            lines.append(f"used {model}")
        return "\n".join(lines)

    emit(result, args.json, human)
    return 0


# --------------------------------------------------------------------------------------- stats
def cmd_stats(args: argparse.Namespace) -> int:
    """Musicality statistics of a run's fresh samples, or of MIDI/.npz files, beside real pieces."""
    if not args.run and not args.files:
        raise LapMusicError("give a run folder (--run RUNDIR) or MIDI/.npz files to describe")
    from lapmusic.sampling.limits import MAX_SAMPLE_FRAMES, MAX_SAMPLES

    if not 1 <= args.steps <= MAX_SAMPLE_FRAMES:
        raise LapMusicError(f"--steps must be 1 to {MAX_SAMPLE_FRAMES:,} frames, got {args.steps:,}")
    if not 1 <= args.samples <= MAX_SAMPLES:
        raise LapMusicError(f"--samples must be 1 to {MAX_SAMPLES}, got {args.samples:,}")
    if args.run:
        check_run_dir(args.run)
    if args.dataset:
        check_dataset(args.dataset)
    check_device(args.device)

    import numpy as np

    from lapmusic.sampling import stats
    from lapmusic.sampling.stats_sources import load_rolls, sample_stats

    if args.run:
        from lapmusic.training.results import load_run

        run = load_run(args.run, device=args.device)
        if args.files:
            raise LapMusicError("give either --run (its samples are drawn) or files, not both")
        result = sample_stats(run, n_samples=args.samples, steps=args.steps, temperature=args.temperature,
                                    seed=args.seed, max_polyphony=args.max_polyphony, split=args.split)
    else:
        if not args.dataset:
            raise LapMusicError("files need --dataset KEY: the real pieces they are compared with")
        from lapmusic.data.registry import load_dataset

        rolls = load_rolls(args.files, step_seconds=args.step_seconds)
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


# --------------------------------------------------------------------------------------- parsers
def add_generate_parsers(sub) -> None:
    """Add the ``generate`` and ``stats`` subcommands to ``sub`` (the subparsers of ``lapmusic``)."""
    p = sub.add_parser("generate", help="sample a piece from a trained run; write MIDI (and WAV)")
    p.add_argument("rundir", help="a run folder written by lapmusic train")
    p.add_argument("--steps", type=int, default=256,
                   help="number of frames to generate; a sample, primer included, lasts at most 300 s and 4096 "
                   "frames (default 256)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="divides the logits: below 1 plays safer, above 1 wilder; 0 = deterministic, a key "
                   "sounds when p >= --threshold (default 1.0)")
    p.add_argument("--threshold", default="0.5",
                   help="with --temperature 0: a key sounds at p >= THRESHOLD; 'valid' = the threshold chosen on "
                   "the validation split (final.json) (default 0.5)")
    p.add_argument("--seed", type=int, default=0,
                   help="same seed, same run, same device: the same sample (default 0)")
    p.add_argument("--primer", default="none",
                   help="none, SPLIT:INDEX:FRAMES (e.g. test:0:16), chord:60,64,67 (also note names, chord:C4,E4,G4, "
                   "and :N to hold it N frames) or a MIDI file to continue, FILE.mid or FILE.mid:N for its first N "
                   "frames (its tempo and time signature are kept); at most 256 frames (default none: start from "
                   "silence)")
    p.add_argument("--variations", type=int, default=1,
                   help="draw N variations at once, 1-8; --out song.mid then writes song-1.mid ... song-N.mid "
                   "(and likewise --wav, --html) (default 1)")
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
    p.add_argument("--samples", type=int, default=20, help="samples drawn from --run, 1-256 (default 20)")
    p.add_argument("--steps", type=int, default=64, help="frames per sample from --run, 1-4,096 (default 64)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    p.add_argument("--max-polyphony", type=positive_int, help="keep at most K keys per frame (default: no cap)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--step-seconds", type=float,
                   help="seconds per frame when reading MIDI files (default 0.25)")
    p.add_argument("--device", help="cpu or cuda (default: the run's device setting)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    p.set_defaults(func=cmd_stats)
