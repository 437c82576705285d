"""``lapmusic generate`` (sample a trained run to MIDI, WAV, HTML) and ``lapmusic stats`` (musicality of samples)."""

from __future__ import annotations

import argparse
import sys

from lapmusic.cli.common import (
    ProgressLine,
    _check_dataset,
    _check_device,
    _check_file,
    _check_run_dir,
    _greedy_threshold,
    emit,
)
from lapmusic.core.errors import LapMusicError


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

    from lapmusic.core.io import atomic_write_bytes, atomic_write_text
    from lapmusic.sampling.audio import render_wav
    from lapmusic.sampling.sample import sample_run
    from lapmusic.training.results import load_run

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
        "output": run.config.model.output,
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
        from lapmusic.plots import piano_roll_figure

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

    from lapmusic.sampling import stats

    if args.run:
        from lapmusic.training.results import load_run

        run = load_run(args.run, device=args.device)
        if args.files:
            raise LapMusicError("give either --run (its samples are drawn) or files, not both")
        result = stats.sample_stats(run, n_samples=args.samples, steps=args.steps, temperature=args.temperature,
                                    seed=args.seed, max_polyphony=args.max_polyphony, split=args.split)
    else:
        if not args.dataset:
            raise LapMusicError("files need --dataset KEY: the real pieces they are compared with")
        from lapmusic.data.registry import load_dataset

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
