"""What a run is built from: its config (from the run folder), its pieces of each split, its saved weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from lapmusic.core.errors import CheckpointError, DataError, LapMusicError
from lapmusic.core.io import atomic_write_json, read_json
from lapmusic.data.fingerprint import dataset_fingerprint, describe_change
from lapmusic.model.rnn import PianoRollRNN
from lapmusic.training.config import RESUMABLE_CHANGES, TrainConfig
from lapmusic.training.presets import distinct_chords
from lapmusic.training.rundir import no_checkpoint_message


def config_from_run(run_dir: Path) -> TrainConfig:
    path = run_dir / "config.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{run_dir} is not a run folder: it has no config.json") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is unreadable ({exc}); the run folder is corrupt") from exc
    try:
        return TrainConfig.from_dict(data)
    except (LapMusicError, TypeError) as exc:
        raise CheckpointError(f"{path} does not hold a valid lapmusic training config: {exc}") from exc


def resumed_config(config: TrainConfig | None, run_dir: Path) -> TrainConfig:
    """The folder's config, with the changes a resume allows taken from ``config`` (``None``: none)."""
    saved = config_from_run(run_dir)
    if config is not None:
        before = saved.to_dict()
        changed = {k for k, v in config.to_dict().items() if before[k] != v} - set(RESUMABLE_CHANGES)
        if changed:
            raise LapMusicError(
                f"cannot resume {run_dir} with different settings {sorted(changed)}; "
                f"only {', '.join(RESUMABLE_CHANGES[:-1])} and {RESUMABLE_CHANGES[-1]} may change"
            )
        for name in RESUMABLE_CHANGES:
            setattr(saved, name, getattr(config, name))
        saved.validate()
    if not (run_dir / "checkpoint.pt").exists():
        raise CheckpointError(no_checkpoint_message(run_dir, saved.to_dict()))
    return saved


def load_model_state(model: PianoRollRNN, state: dict, path: Path) -> None:
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path} does not match the run's config.json (hidden size, cell or output): "
                              f"{exc}") from exc


def load_run_dataset(key: str, run_dir=None, *, purpose: str = "use"):
    """The dataset ``key``, checked against the data the run in ``run_dir`` was trained on.

    Parameters
    ----------
    key : str
        The run's dataset (its config's ``dataset``).
    run_dir : str or Path, optional
        The run folder; without it (or without its ``data.json``: runs written before it existed) nothing
        is checked.
    purpose : str, default="use"
        What the caller does with the data, for the message (e.g. ``"resume"``, ``"take a primer from"``).

    Returns
    -------
    dataset : lapmusic.data.dataset.Dataset

    Raises
    ------
    DataError
        When the data changed since the run was trained (:func:`run_data_change` says how).
    """
    from lapmusic.data.registry import load_dataset

    dataset = load_dataset(key)
    if run_dir is not None:
        check_run_data(run_dir, dataset, purpose=purpose)
    return dataset


# ------------------------------------------------------------------------------------------ data fingerprint
DATA_FILE = "data.json"
"""The run folder's record of its data: ``{"dataset": key, "splits": dataset_fingerprint(...)}``."""


def record_run_data(run_dir: Path, key: str, dataset) -> dict:
    """Write ``RUNDIR/data.json``: the fingerprint of each split of the data the run trains on.

    Returns
    -------
    dict
        What was written.
    """
    record = {"dataset": key, "splits": dataset_fingerprint(dataset)}
    atomic_write_json(Path(run_dir) / DATA_FILE, record)
    return record


def read_run_data(run_dir) -> dict | None:
    """``RUNDIR/data.json`` (``None`` for a run written before runs recorded their data, or when unreadable)."""
    record = read_json(Path(run_dir) / DATA_FILE)
    return record if isinstance(record, dict) and isinstance(record.get("splits"), dict) else None


def check_run_data(run_dir, dataset, *, purpose: str = "use") -> None:
    """Raise :class:`DataError` when ``dataset`` is not the data the run in ``run_dir`` recorded (see
    :func:`load_run_dataset`); nothing for a run that recorded none."""
    change = run_data_change(run_dir, dataset)
    if change:
        raise DataError(f"{change}; refusing to {purpose} it with other data. Put the dataset back as it was, "
                        "or train a new run on the data as it is now")


def run_data_change(run_dir, dataset) -> str | None:
    """How ``dataset`` differs from the data the run in ``run_dir`` recorded, in one sentence; ``None`` when it
    does not, or when the run recorded nothing (an older run)."""
    record = read_run_data(run_dir)
    if record is None:
        return None
    change = describe_change(record["splits"], dataset_fingerprint(dataset))
    if change is None:
        return None
    return f"the data of dataset {record.get('dataset')!r} changed since run {run_dir} was trained on it: {change}"


def run_dataset(config: TrainConfig, dataset=None):
    """``dataset``, or the run's dataset loaded (:func:`load_run_dataset`) when it is ``None``."""
    return dataset if dataset is not None else load_run_dataset(config.dataset)


def run_split(config: TrainConfig, split: str, dataset=None) -> list[np.ndarray]:
    """The pieces of ``split`` a run with ``config`` trains or is evaluated on (limits applied)."""
    dataset = dataset if dataset is not None else load_run_dataset(config.dataset)
    if split == "train":
        return training_pieces(config, dataset)
    if split not in ("valid", "test"):
        raise LapMusicError(f"split must be train, valid or test, not {split!r}")
    return _select(getattr(dataset, split), config.max_sequences)


def run_splits(config: TrainConfig, dataset=None) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """The train, valid and test pieces of a run with ``config`` (the dataset loaded once when not given)."""
    dataset = dataset if dataset is not None else load_run_dataset(config.dataset)
    return tuple(run_split(config, split, dataset) for split in ("train", "valid", "test"))


def _select(seqs: Sequence[np.ndarray], limit: int | None) -> list[np.ndarray]:
    seqs = list(seqs)
    return seqs if limit is None else seqs[:limit]


def training_pieces(config: TrainConfig, dataset) -> list[np.ndarray]:
    train = _select(dataset.train, config.max_sequences)
    if config.max_train_sequences is not None and len(train) > config.max_train_sequences:
        rng = np.random.default_rng(7919)  # the same subset for every seed: seeds vary the training only
        keep = np.sort(rng.choice(len(train), config.max_train_sequences, replace=False))
        train = [train[i] for i in keep]
    return train


def vocabulary_note(config: TrainConfig, train_pieces: Sequence[np.ndarray]) -> str | None:
    """What to tell the user when the chord vocabulary asks for more chords than the training pieces have.

    The vocabulary then holds every training chord (:func:`lapmusic.training.presets.distinct_chords` counts them) (:func:`lapmusic.model.chordvocab.build_vocabulary` keeps
    what there is), which over-fits: a validation chord outside it gets only the NADE's share.

    Parameters
    ----------
    config : TrainConfig
        The run's settings (only ``model.output`` and ``model.nade_vocab`` are read).
    train_pieces : sequence of array-like of shape (T_i, 88)
        The run's training pieces.

    Returns
    -------
    str or None
        One sentence naming the number of chords found, or None when the vocabulary is off or fits.
    """
    asked = config.model.nade_vocab
    if config.model.output != "nade" or not asked:
        return None
    found = distinct_chords(train_pieces)
    if asked <= found:
        return None
    return (f"nade_vocab {asked} asks for more chords than the {len(train_pieces)} training pieces have: "
            f"{found} distinct chords found, so the vocabulary holds all {found}; a vocabulary of every training "
            f"chord over-fits, choose nade_vocab {max(1, 2 * found // 5)} or less")
