"""Where the rolls that :mod:`lapmusic.sampling.stats` describes come from: files (:func:`load_rolls`) and a
run's fresh samples beside its dataset (:func:`sample_stats`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from lapmusic import N_KEYS
from lapmusic.core.errors import LapMusicError
from lapmusic.sampling.stats import compare, reference_excerpts


# ---------------------------------------------------------------------------------------- files
def load_rolls(paths: Sequence, step_seconds: float | None = None) -> list[np.ndarray]:
    """Piano rolls from files and folders.

    Parameters
    ----------
    paths : sequence of str or os.PathLike
        ``.mid``/``.midi`` files, ``.npz``/``.npy`` files (every ``(T, 88)`` array inside; a
        ``(n, T, 88)`` array gives ``n`` rolls), or folders searched (recursively, sorted) for them.
    step_seconds : float, optional
        Seconds per frame when reading MIDI (default 0.25).

    Returns
    -------
    list of ndarray of shape (T_i, 88)
        uint8 0/1 rolls, in the order found.

    Raises
    ------
    LapMusicError
        A path does not exist, a file has another type or cannot be read, an array has another shape,
        or no roll was found.
    """
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
    """Sample a run (from silence) and compare the samples with excerpts of its dataset.

    Parameters
    ----------
    run : lapmusic.training.results.LoadedRun
        From :func:`lapmusic.training.results.load_run`.
    n_samples, steps : int, default=20, 64
        Samples drawn and frames per sample (also the excerpts' length).
    temperature, seed, max_polyphony
        As for :func:`lapmusic.sampling.sample.generate`.
    split : {"train", "valid", "test"}, default="train"
        The split the real excerpts come from.
    dataset : lapmusic.data.dataset.Dataset, optional
        The run's dataset, already loaded.
    max_pieces : int, default=200
        At most this many excerpts.

    Returns
    -------
    dict
        :func:`compare`'s result plus ``settings`` (the arguments, the dataset, the output and the init).

    Raises
    ------
    LapMusicError
        A refusal of :func:`lapmusic.sampling.sample.generate` or of the dataset.
    """
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
