"""Musicality statistics of piano rolls: a sample (or a set) beside real pieces of the same dataset.

Every statistic is computed per piece from its ``(T, 88)`` 0/1 roll (column ``k`` = MIDI pitch ``21 + k``):

- ``pitch_range``: highest minus lowest sounding key, in semitones (``None`` for a silent piece).
- ``polyphony``: mean number of keys on over the frames where at least one key sounds.
- ``repeated_frames``: share of the ``T - 1`` frame transitions where frame ``t`` equals frame ``t - 1``
  (held chords, sustained silence).
- ``distinct_chords``: number of distinct sounding frames (sets of keys) over the number of sounding frames:
  1.0 means a new chord every frame, a long-held progression gives a small value.
- ``note_length``: mean length in frames of the notes, a note being a maximal run of one key held on over
  consecutive frames (re-striking a held key is invisible in a roll); ``note_length_hist`` gives the
  share of notes lasting 1, 2, 3-4, 5-8 and more than 8 frames.
- ``key_fit``: the Krumhansl-Schmuckler key-finding correlation: the Pearson correlation of the piece's
  pitch-class profile (frames each pitch class sounds, summed over octaves) with the Krumhansl-Kessler
  major and minor profiles rotated to all 12 tonics; the best of the 24 is the key (``key``) and its
  correlation the fit (``None`` for a silent piece or a flat profile). Tonal music scores about 0.6-0.9,
  uniform noise about 0.
- ``silence``: share of frames with no key on.

A set of pieces is summarised per statistic by its mean, the 10th and 90th percentiles (the "range" used to
say a sample lies inside the real pieces') and the number of pieces it is defined for. Real pieces are cut
to excerpts as long as the samples, from their first frame, and pieces shorter than the samples are left out
(:func:`reference_excerpts`) because several statistics depend on length.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from lapmusic import LOWEST_PITCH, N_KEYS
from lapmusic.core.errors import LapMusicError

# Krumhansl & Kessler (1982) probe-tone profiles, tonic first (C major / C minor).
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
NOTE_BINS = ((1, 1), (2, 2), (3, 4), (5, 8), (9, None))
NOTE_BIN_LABELS = ("1", "2", "3-4", "5-8", ">8")

STATS = ("pitch_range", "polyphony", "repeated_frames", "distinct_chords", "note_length", "key_fit", "silence")
LABELS = {
    "pitch_range": "pitch range (semitones)",
    "polyphony": "polyphony (keys per sounding frame)",
    "repeated_frames": "frames equal to the previous one",
    "distinct_chords": "distinct chords per sounding frame",
    "note_length": "mean note length (frames)",
    "key_fit": "key fit (Krumhansl-Schmuckler r)",
    "silence": "silent frames",
}


def _roll(roll) -> np.ndarray:
    array = np.asarray(roll)
    if array.ndim != 2 or array.shape[1] != N_KEYS:
        raise LapMusicError(f"a piano roll must be (T, {N_KEYS}), got shape {array.shape}")
    return array > 0


def note_lengths(roll) -> np.ndarray:
    """Lengths in frames of every note (maximal run of 1s in one key's column), in no particular order."""
    on = _roll(roll).astype(np.int8)
    padded = np.zeros((on.shape[0] + 2, N_KEYS), dtype=np.int8)
    padded[1:-1] = on
    change = np.diff(padded, axis=0)  # +1 where a run starts, -1 one past where it ends
    starts = np.nonzero(change.T == 1)
    ends = np.nonzero(change.T == -1)
    # Both are sorted by key, then by frame, and runs alternate start/end within a key: they pair up.
    return (ends[1] - starts[1]).astype(np.int64)


def key_fit(roll) -> tuple[float | None, str | None]:
    """``(correlation, key name)`` of the best of the 24 rotated Krumhansl-Kessler profiles."""
    on = _roll(roll)
    durations = on.sum(0).astype(np.float64)
    profile = np.zeros(12)
    np.add.at(profile, (np.arange(N_KEYS) + LOWEST_PITCH) % 12, durations)
    if profile.std() == 0:
        return None, None
    best, name = -2.0, None
    for tonic in range(12):
        for mode, template in (("major", KK_MAJOR), ("minor", KK_MINOR)):
            r = float(np.corrcoef(profile, np.roll(template, tonic))[0, 1])
            if r > best:
                best, name = r, f"{PITCH_NAMES[tonic]} {mode}"
    return best, name


def piece_stats(roll) -> dict:
    """Every statistic of one ``(T, 88)`` roll (see the module docstring); undefined ones are ``None``."""
    on = _roll(roll)
    frames = on.shape[0]
    counts = on.sum(1)
    sounding = counts > 0
    keys = np.nonzero(on.any(0))[0]
    lengths = note_lengths(on)
    fit, key = key_fit(on)
    hist = None
    if len(lengths):
        hist = [float(np.mean((lengths >= low) & (True if high is None else lengths <= high)))
                for low, high in NOTE_BINS]
    chords = {on[t].tobytes() for t in np.nonzero(sounding)[0]}
    return {
        "frames": int(frames),
        "pitch_range": int(keys[-1] - keys[0]) if len(keys) else None,
        "polyphony": float(counts[sounding].mean()) if sounding.any() else None,
        "repeated_frames": float((on[1:] == on[:-1]).all(1).mean()) if frames >= 2 else None,
        "distinct_chords": len(chords) / int(sounding.sum()) if sounding.any() else None,
        "note_length": float(lengths.mean()) if len(lengths) else None,
        "note_length_hist": hist,
        "key_fit": fit,
        "key": key,
        "silence": float((~sounding).mean()) if frames else None,
    }


def summarize(rolls: Iterable) -> dict:
    """Per statistic over a set of rolls: ``{"mean", "p10", "p90", "min", "max", "n"}`` (``n`` = pieces where
    it is defined), plus ``"note_length_hist"`` pooled over all notes and ``"pieces"``."""
    rolls = list(rolls)  # read twice below: a generator would be empty the second time
    per_piece = [piece_stats(roll) for roll in rolls]
    summary: dict = {"pieces": len(per_piece)}
    for name in STATS:
        values = np.array([p[name] for p in per_piece if p[name] is not None], dtype=np.float64)
        if len(values) == 0:
            summary[name] = {"mean": None, "p10": None, "p90": None, "min": None, "max": None, "n": 0}
            continue
        summary[name] = {"mean": float(values.mean()), "p10": float(np.percentile(values, 10)),
                         "p90": float(np.percentile(values, 90)), "min": float(values.min()),
                         "max": float(values.max()), "n": int(len(values))}
    lengths = np.concatenate([note_lengths(r) for r in rolls]) if per_piece else np.zeros(0)
    summary["note_length_hist"] = (
        [float(np.mean((lengths >= low) & (True if high is None else lengths <= high))) for low, high in NOTE_BINS]
        if len(lengths) else None)
    return summary


def reference_excerpts(pieces: Sequence, frames: int, max_pieces: int = 200, seed: int = 0) -> list[np.ndarray]:
    """The first ``frames`` frames of up to ``max_pieces`` real pieces at least ``frames`` long (a seeded random
    choice when there are more): real excerpts exactly as long as the samples they are compared with, starting
    where the samples start (a piece's beginning). Shorter pieces are left out because several statistics
    depend on length (over fewer frames, fewer chords can recur: on JSB, 136 of the 229 training pieces are
    shorter than 64 frames and their whole-piece distinct-chords-per-frame runs higher). When no piece is that
    long, every non-empty piece is taken whole (the excerpts are then shorter than the samples)."""
    if frames < 1:
        raise LapMusicError(f"excerpt length must be at least one frame, got {frames}")
    pieces = [np.asarray(p) for p in pieces if len(p) > 0]
    long_enough = [p for p in pieces if len(p) >= frames]
    pieces = long_enough or pieces
    if len(pieces) > max_pieces:
        keep = np.sort(np.random.default_rng(seed).choice(len(pieces), max_pieces, replace=False))
        pieces = [pieces[i] for i in keep]
    return [(p[:frames] > 0).astype(np.uint8) for p in pieces]


def compare(samples: Sequence, reference: Sequence) -> dict:
    """Summaries of ``samples`` and ``reference`` and, per statistic, whether the samples' mean lies inside the
    reference's 10th-90th percentile range: ``{"samples", "reference", "inside": {stat: bool | None}}``."""
    s, r = summarize(samples), summarize(reference)
    inside = {}
    for name in STATS:
        mean, low, high = s[name]["mean"], r[name]["p10"], r[name]["p90"]
        inside[name] = None if mean is None or low is None else bool(low <= mean <= high)
    return {"samples": s, "reference": r, "inside": inside}


def compare_with_pieces(generated, pieces: Sequence, max_pieces: int = 200) -> dict:
    """One generated roll ``(T, 88)`` against ``T``-frame excerpts of real ``pieces`` (:func:`compare`)."""
    generated = np.asarray(generated)
    return compare([generated], reference_excerpts(pieces, max(len(generated), 1), max_pieces=max_pieces))


def samples_table(rolls: dict, pieces: Sequence, max_pieces: int = 200) -> tuple[list[dict], str]:
    """Rows (one per statistic) with a column per named roll (``{label: (T, 88) roll}``) and the real pieces'
    mean and 10-90 % range over excerpts as long as the longest roll; plus a caption saying what "real" is."""
    frames = max([len(r) for r in rolls.values()] + [1])
    reference = summarize(reference_excerpts(pieces, frames, max_pieces=max_pieces))
    per_roll = {label: piece_stats(roll) for label, roll in rolls.items()}
    rows = []
    for name in STATS:
        row = {"statistic": LABELS[name]}
        row.update({label: _fmt(values[name]) for label, values in per_roll.items()})
        row["real (mean)"] = _fmt(reference[name]["mean"])
        row["real (10-90 %)"] = f"{_fmt(reference[name]['p10'])} - {_fmt(reference[name]['p90'])}"
        rows.append(row)
    caption = (f"Real: the first {frames} frames of {reference['pieces']} training pieces (pieces at least "
               f"{frames} frames long when there are any); range = their 10th-90th percentiles.")
    return rows, caption


def table_rows(comparison: dict) -> list[dict]:
    """One row per statistic (for the app's table and the CLI): label, samples' mean, real mean and range."""
    rows = []
    for name in STATS:
        s, r = comparison["samples"][name], comparison["reference"][name]
        rows.append({"statistic": LABELS[name], "samples": _fmt(s["mean"]), "real (mean)": _fmt(r["mean"]),
                     "real (10-90 %)": f"{_fmt(r['p10'])} - {_fmt(r['p90'])}",
                     "inside": {True: "yes", False: "no", None: "-"}[comparison["inside"][name]]})
    return rows


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


# ---------------------------------------------------------------------------------------- files
def load_rolls(paths: Sequence, step_seconds: float | None = None) -> list[np.ndarray]:
    """Rolls from ``.mid``/``.midi`` files (sampled every ``step_seconds``, default 0.25 s) and ``.npz`` / ``.npy``
    files (every ``(T, 88)`` array inside; a 3-D ``(n, T, 88)`` array gives ``n`` rolls). Folders are searched
    for such files (sorted)."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in (".mid", ".midi", ".npz", ".npy"))
        elif path.exists():
            files.append(path)
        else:
            raise LapMusicError(f"{path} does not exist; give MIDI (.mid), .npz or .npy files or a folder of them")
    rolls: list[np.ndarray] = []
    for path in files:
        suffix = path.suffix.lower()
        if suffix in (".mid", ".midi"):
            from lapmusic.data.midi import midi_to_roll

            rolls.append(midi_to_roll(os.fspath(path), step_seconds=step_seconds or 0.25))
        elif suffix in (".npz", ".npy"):
            try:
                loaded = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise LapMusicError(f"{path} could not be read as numpy data ({exc})") from exc
            arrays = [loaded[k] for k in loaded.files] if suffix == ".npz" else [loaded]
            for array in arrays:
                array = np.asarray(array)
                if array.ndim == 3 and array.shape[-1] == N_KEYS:
                    rolls += [(a > 0).astype(np.uint8) for a in array]
                elif array.ndim == 2 and array.shape[1] == N_KEYS:
                    rolls.append((array > 0).astype(np.uint8))
                else:
                    raise LapMusicError(f"{path} holds an array of shape {array.shape}; expected (T, 88) or "
                                        "(n, T, 88) piano rolls")
        else:
            raise LapMusicError(f"{path}: unsupported file type {suffix!r}; use .mid, .npz or .npy")
    if not rolls:
        raise LapMusicError("no piano roll found in the given files")
    return rolls


# ---------------------------------------------------------------------------------------- runs
def sample_stats(run, *, n_samples: int = 20, steps: int = 64, temperature: float = 1.0, seed: int = 0,
                 max_polyphony: int | None = None, split: str = "train", dataset=None,
                 max_pieces: int = 200) -> dict:
    """Sample ``n_samples`` pieces of ``steps`` frames from a loaded run (from silence) and compare them with
    ``steps``-frame excerpts of the run's dataset ``split``; returns :func:`compare`'s dict plus the settings."""
    from lapmusic.sampling.sample import generate
    from lapmusic.training.build import run_split

    rolls = generate(run.model, steps=steps, temperature=temperature, seed=seed, n_samples=n_samples,
                     max_polyphony=max_polyphony, device=run.device)
    reference = reference_excerpts(run_split(run.config, split, dataset), steps, max_pieces=max_pieces)
    result = compare(list(rolls), reference)
    result.update(settings={"n_samples": n_samples, "steps": steps, "temperature": temperature, "seed": seed,
                            "max_polyphony": max_polyphony, "split": split, "dataset": run.config.dataset,
                            "output": run.config.model.output, "init": run.config.init})
    return result
