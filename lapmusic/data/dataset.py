"""A dataset: train/valid/test lists of piano rolls, its cache folder and its .npz form."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lapmusic import N_KEYS
from lapmusic.core.errors import DataError
from lapmusic.core.io import atomic_save
from lapmusic.data.files import SPLITS
from lapmusic.data.roll import DEFAULT_STEP_SECONDS, check_roll


@dataclass
class Dataset:
    """Train/valid/test lists of piano rolls.

    Attributes
    ----------
    key : str
        How :func:`lapmusic.data.registry.load_dataset` finds it: ``"jsb"``, ``"bach"``, ``"user:NAME"``...
    name : str
        Its name for people.
    train, valid, test : list of ndarray of shape (T_i, 88), uint8
        The pieces of each split, 0/1, column ``k`` = MIDI pitch ``21 + k``; ``T_i`` varies by piece.
    step_seconds : float, default=0.25
        Suggested playback duration of one frame.
    source : str, default=""
        Where the data came from (a file path, or a description).
    bad_files : list of lapmusic.data.user.BadFile
        Files left out when the dataset was made from MIDI files, with the reason.
    frames_per_beat : int or None, default=None
        Frames per quarter note when the pieces follow the beat (a dataset made from MIDI files); with
        ``step_seconds`` it gives the tempo, ``60 / (frames_per_beat * step_seconds)`` quarter notes a
        minute. None: unknown (MIDI output then picks the tempo nearest 120 bpm).
    time_signature : tuple of (int, int) or None, default=None
        The pieces' meter, e.g. ``(3, 4)``, written into generated MIDI; None: 4/4.
    """

    key: str
    name: str
    train: list[np.ndarray]
    valid: list[np.ndarray]
    test: list[np.ndarray]
    step_seconds: float = DEFAULT_STEP_SECONDS
    source: str = ""
    bad_files: list = field(default_factory=list)
    frames_per_beat: int | None = None
    time_signature: tuple[int, int] | None = None

    def split(self, name: str) -> list[np.ndarray]:
        """The pieces of one split.

        Parameters
        ----------
        name : {"train", "valid", "test"}

        Returns
        -------
        pieces : list of ndarray of shape (T_i, 88), uint8

        Raises
        ------
        DataError
            If ``name`` is not a split.
        """
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def subset(self, max_sequences: int | None) -> "Dataset":
        """The first pieces of every split.

        Parameters
        ----------
        max_sequences : int or None
            Pieces kept per split; ``None`` keeps them all.

        Returns
        -------
        dataset : Dataset
            ``self`` when ``max_sequences`` is None, else a new dataset sharing the pieces (not copies).
        """
        if max_sequences is None:
            return self
        return Dataset(
            self.key, self.name, self.train[:max_sequences], self.valid[:max_sequences],
            self.test[:max_sequences], self.step_seconds, self.source,
            frames_per_beat=self.frames_per_beat, time_signature=self.time_signature,
        )

    def summary(self) -> dict:
        """Facts about the dataset, JSON-able.

        Returns
        -------
        summary : dict
            ``key``, ``name``, ``split_sizes`` and ``frames`` (dicts by split), ``notes_per_frame`` (mean
            keys down per frame over all splits) and ``longest`` (frames of the longest piece).
        """
        out: dict = {"key": self.key, "name": self.name, "split_sizes": {}, "frames": {}}
        for name in SPLITS:
            pieces = self.split(name)
            out["split_sizes"][name] = len(pieces)
            out["frames"][name] = int(sum(len(p) for p in pieces))
        every = [p for name in SPLITS for p in self.split(name)]
        frames = sum(len(p) for p in every)
        out["notes_per_frame"] = float(sum(int(p.sum()) for p in every) / frames) if frames else 0.0
        out["longest"] = int(max((len(p) for p in every), default=0))
        return out


def cache_dir() -> Path:
    """The user cache folder: ``$LAPMUSIC_CACHE_DIR``, else the platform's (``platformdirs``)."""
    value = os.environ.get("LAPMUSIC_CACHE_DIR")
    if value:
        return Path(value).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("lapmusic"))


# ------------------------------------------------------------------------------ .npz storage
def save_dataset_npz(dataset: Dataset, path: str | os.PathLike) -> Path:
    """Store a dataset as one ``.npz`` (concatenated frames + lengths per split, the meter when known); no
    pickle inside."""
    arrays: dict[str, np.ndarray] = {
        "name": np.array(dataset.name),
        "step_seconds": np.array(dataset.step_seconds, dtype=float),
    }
    if dataset.frames_per_beat is not None:
        arrays["frames_per_beat"] = np.array(dataset.frames_per_beat, dtype=np.int64)
    if dataset.time_signature is not None:
        arrays["time_signature"] = np.array(dataset.time_signature, dtype=np.int64)
    for name in SPLITS:
        pieces = dataset.split(name)
        arrays[f"{name}_lengths"] = np.array([len(p) for p in pieces], dtype=np.int64)
        arrays[f"{name}_frames"] = (
            np.concatenate(pieces).astype(np.uint8) if pieces else np.zeros((0, N_KEYS), dtype=np.uint8)
        )
    return atomic_save(path, lambda handle: np.savez_compressed(handle, **arrays))


def load_dataset_npz(path: str | os.PathLike, key: str) -> Dataset:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as content:
            splits = {}
            for name in SPLITS:
                frames = check_roll(content[f"{name}_frames"], f"{path.name} {name}")
                bounds = np.cumsum(content[f"{name}_lengths"])[:-1]
                splits[name] = [np.ascontiguousarray(p) for p in np.split(frames, bounds)] if len(frames) else []
            name = str(content["name"])
            step = float(content["step_seconds"])
            # Both absent in files written before the meter was recorded: 4/4 at the step's tempo.
            beat = int(content["frames_per_beat"]) if "frames_per_beat" in content.files else None
            meter = tuple(int(v) for v in content["time_signature"]) if "time_signature" in content.files else None
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: unreadable dataset file ({type(exc).__name__}: {exc}); delete it to rebuild") from None
    if beat is not None and beat < 1 or meter is not None and (len(meter) != 2 or min(meter) < 1):
        raise DataError(f"{path}: unreadable dataset file (meter {beat}, {meter}); delete it to rebuild")
    return Dataset(key, name, splits["train"], splits["valid"], splits["test"], step, str(path),
                   frames_per_beat=beat, time_signature=meter)
