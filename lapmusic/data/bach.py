"""The offline Bach set: chorales from the ``music21`` corpus as quarter-note piano rolls, like JSB.

Built once, slowly (music21 parses every chorale; ``lapmusic datasets prepare bach`` does it ahead of time),
and cached as ``<cache>/bach-chorales-v1.npz``; loaded as the dataset ``bach``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from lapmusic import LOWEST_PITCH, N_KEYS
from lapmusic.core.errors import DataError
from lapmusic.core.progress import Progress, no_progress
from lapmusic.data.catalog import BACH_CACHE_NAME, DATASETS
from lapmusic.data.dataset import Dataset, cache_dir, load_dataset_npz, save_dataset_npz
from lapmusic.data.files import SPLITS


def bach_split_of(name: str) -> str:
    """Deterministic split by a hash of the corpus file name (stable across machines): buckets 0-5 of 10
    train, 6-7 valid, 8-9 test, so nominally 60/20/20; music21 10.5's corpus gives 252/79/77 pieces."""
    bucket = int(hashlib.sha1(name.encode()).hexdigest(), 16) % 10
    return "train" if bucket < 6 else "valid" if bucket < 8 else "test"


def score_to_roll(score) -> np.ndarray:
    """Sample a music21 score at every quarter note: a key is on at beat t if a note sounds at t.

    Like JSB (Boulanger-Lewandowski 2012), ornaments and passing notes that fall between beats vanish.
    """
    notes = []
    for element in score.recurse().notes:
        start = float(element.getOffsetInHierarchy(score))
        end = start + float(element.duration.quarterLength)
        for pitch in element.pitches:
            notes.append((int(pitch.midi), start, end))
    if not notes:
        return np.zeros((0, N_KEYS), dtype=np.uint8)
    length = int(np.ceil(max(end for _, _, end in notes) - 1e-6))
    roll = np.zeros((length, N_KEYS), dtype=np.uint8)
    for pitch, start, end in notes:
        first, last = int(np.ceil(start - 1e-6)), int(np.ceil(end - 1e-6))
        if last > first and LOWEST_PITCH <= pitch < LOWEST_PITCH + N_KEYS:
            roll[first:last, pitch - LOWEST_PITCH] = 1
    return roll


def music21_scratch() -> Path:
    """Point music21's scratch folder (where it writes parse caches and temp files; by default the system
    temp folder, shared by every user of the machine) at ``<cache>/music21`` and return it."""
    from music21 import environment

    scratch = cache_dir() / "music21"
    scratch.mkdir(parents=True, exist_ok=True)
    environment.Environment()["directoryScratch"] = str(scratch)  # this process only; nothing is saved
    return scratch


def build_bach(progress: Progress = no_progress, limit: int | None = None) -> Dataset:
    """Build the offline Bach set from music21's corpus (no network).

    Every score is parsed from its source file (``forceSource``): music21's own parse caches are pickles,
    and a pickle planted in a shared temp folder would otherwise be loaded. music21's scratch folder is
    moved into the cache folder all the same.

    Parameters
    ----------
    progress : callable, optional
        ``progress(fraction, message)``, called once per corpus file.
    limit : int, optional
        Parse only the first ``limit`` chorales (for tests).

    Returns
    -------
    dataset : Dataset
        Key ``"bach"``: quarter-note frames, split by a hash of each file's name (see
        :func:`bach_split_of`); fragments under 8 frames and duplicate harmonisations left out.

    Raises
    ------
    DataError
        If music21 is missing, its corpus holds no chorale, or the build yields no piece or fails on most
        files (naming the first failure).
    """
    try:
        from music21 import corpus
    except ImportError:
        raise DataError("the offline Bach set needs the music21 package: pip install music21") from None
    music21_scratch()
    paths = sorted(
        (p for p in corpus.getComposer("bach") if p.suffix in (".mxl", ".xml") and p.name.startswith("bwv")),
        key=lambda p: p.name,
    )
    if limit is not None:
        paths = paths[:limit]
    if not paths:
        raise DataError("music21's corpus holds no Bach chorales; reinstall music21 (pip install --force-reinstall music21)")
    splits: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    seen: set[bytes] = set()
    failures: list[str] = []
    for i, path in enumerate(paths):
        progress(i / len(paths), f"building Bach chorales: {path.name} ({i + 1}/{len(paths)})")
        try:
            roll = score_to_roll(corpus.parse(path, forceSource=True))
        except Exception as exc:  # noqa: BLE001 - a few corpus files do not parse on some music21 versions
            failures.append(f"{path.name}: {type(exc).__name__}: {exc}"[:200])
            continue
        digest = hashlib.sha1(roll.tobytes()).digest()
        if len(roll) < 8 or digest in seen:  # drop fragments and duplicate harmonisations
            continue
        seen.add(digest)
        splits[bach_split_of(path.name)].append(roll)
    pieces = sum(len(v) for v in splits.values())
    if pieces == 0 or len(failures) > len(paths) // 2:
        first = f" (first failure: {failures[0]})" if failures else ""
        raise DataError(
            f"the Bach build made {pieces} pieces from {len(paths)} corpus files, {len(failures)} of which did "
            f"not parse{first}; reinstall music21 (pip install --force-reinstall music21) and try again"
        )
    info = DATASETS["bach"]
    skipped = f", {len(failures)} files skipped (unparsable)" if failures else ""
    progress(1.0, f"Bach chorales ready: {pieces} pieces{skipped}")
    return Dataset("bach", info.name, splits["train"], splits["valid"], splits["test"], info.step_seconds,
                   "music21 corpus")


def load_bach(progress: Progress = no_progress) -> Dataset:
    """The Bach set from the cache, built (and cached) first when missing or damaged."""
    path = cache_dir() / BACH_CACHE_NAME
    if path.is_file():
        try:
            return load_dataset_npz(path, "bach")
        except DataError:
            path.unlink()  # a damaged cache is rebuilt rather than trusted
    dataset = build_bach(progress)
    save_dataset_npz(dataset, path)
    dataset.source = str(path)
    return dataset
