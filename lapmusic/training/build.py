"""What a run is built from: its config (from the run folder), its pieces of each split, its saved weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from lapmusic.core.errors import CheckpointError, LapMusicError
from lapmusic.model.rnn import PianoRollRNN
from lapmusic.training.config import TrainConfig
from lapmusic.training.presets import distinct_chords


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


def load_model_state(model: PianoRollRNN, state: dict, path: Path) -> None:
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path} does not match the run's config.json (hidden size, cell or output): "
                              f"{exc}") from exc


def load_run_dataset(key: str):
    from lapmusic.data.registry import load_dataset

    return load_dataset(key)


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
