"""Named presets: the settings of the paper's model (``paper``) and of the model that sounds like music (``music``).

A preset is a set of flat training settings (the names of ``config.json`` and of the command-line options);
whatever the user sets explicitly wins over it (:func:`resolve`). Torch-free: ``--help`` and the app's sidebar
read it without importing the model.

- ``paper``: Pasa & Sperduti's model, the independent-key (Bernoulli) output, for the LAE-vs-random lesson
  (docs/results.md): TrainConfig's own defaults.
- ``music``: the sampling recipe (docs/models.md, "The sampling recipe"): an RNN-NADE output mixed with a chord
  vocabulary and a copy window, with dropout and relative learning rates; its samples change chord and hold
  notes as often as the real pieces. Sized for a classroom CPU and small datasets (docs/research/presets.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from lapmusic.core.errors import LapMusicError


@dataclass(frozen=True)
class Preset:
    """A named set of training settings.

    Attributes
    ----------
    name : str
        The key (``--preset NAME``).
    title : str
        What it is for, in a few words (the app's choice, ``--help``).
    settings : mapping of str to object
        Flat :class:`lapmusic.training.config.TrainConfig` settings (``config.json`` names).
    """

    name: str
    title: str
    settings: Mapping[str, Any] = field(default_factory=dict)

    def as_options(self) -> str:
        """The settings as the command-line options that give them, e.g. ``--output nade --nade-repeat``.

        Returns
        -------
        str
            ``(TrainConfig's defaults)`` for a preset that sets nothing.
        """
        words = []
        for name, value in self.settings.items():
            option = "--" + name.replace("_", "-")
            if value is True:
                words.append(option)
            elif value is not False and value is not None:
                words.append(f"{option} {value:g}" if isinstance(value, float) else f"{option} {value}")
        return " ".join(words) or "(TrainConfig's defaults)"


PRESETS: dict[str, Preset] = {
    "paper": Preset(
        "paper", "the paper's model: independent keys (Bernoulli), for the LAE-vs-random lesson",
        {"output": "bernoulli", "hidden": 128, "lr": 3e-3, "batch_size": 8, "epochs": 30, "patience": 5},
    ),
    "music": Preset(
        "music", "the model that sounds like music: RNN-NADE with a chord vocabulary and a copy window",
        {"output": "nade", "hidden": 128, "nade_hidden": 64, "nade_vocab": 512, "nade_repeat": True,
         "nade_repeat_window": 32, "dropout": 0.3, "relative_lr": True, "lr": 3e-3, "batch_size": 8,
         "lr_patience": 2, "epochs": 20, "patience": 6, "eval_batch_size": 8, "alpha_target": 4.0},
    ),
}
DEFAULT_PRESET = "music"  # the app's default demo: a class hears music from the first click


def get_preset(name: str) -> Preset:
    """The preset called ``name``.

    Raises
    ------
    LapMusicError
        For a name that is no preset (the message lists them).
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise LapMusicError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def distinct_chords(pieces: Sequence) -> int:
    """How many distinct frames (chords, the empty frame included) ``pieces`` hold.

    Parameters
    ----------
    pieces : sequence of array-like of shape (T_i, K)
        Piano rolls, nonzero = on.

    Returns
    -------
    int
        The number of distinct 0/1 rows over all pieces (0 for no frames).
    """
    import numpy as np

    frames = [np.asarray(p) > 0 for p in pieces if len(p)]
    if not frames:
        return 0
    return len(np.unique(np.packbits(np.concatenate(frames), axis=1), axis=0))


def vocabulary_for(chords: int, asked: int) -> int:
    """The chord vocabulary a preset gets on a training split with ``chords`` distinct chords.

    At most 40 % of them: a vocabulary of every training chord over-fits at the first epoch (40 user pieces,
    docs/research/presets.md), and the recipe's 512 were 21 % of JSB's and 41 % of Nottingham's chords.

    Parameters
    ----------
    chords : int
        Distinct frames of the training split (:func:`distinct_chords`).
    asked : int
        The preset's vocabulary size.

    Returns
    -------
    int
        ``min(asked, 2 * chords // 5)``, at least 1.
    """
    return max(1, min(asked, 2 * chords // 5))


def resolve(name: str | None, explicit: Mapping[str, Any], train_chords: int | None = None) -> dict:
    """A preset's settings overridden by the settings given explicitly.

    Parameters
    ----------
    name : str or None
        A key of :data:`PRESETS`, or None for no preset (only ``explicit``).
    explicit : mapping of str to object
        Flat settings the user set; ``None`` values count as not set (an option left out).
    train_chords : int, optional
        Distinct chords of the run's training split: the preset's ``nade_vocab`` is then cut to
        :func:`vocabulary_for` (an explicit ``nade_vocab`` is kept as given).

    Returns
    -------
    dict
        Flat settings for :meth:`lapmusic.training.config.TrainConfig.from_settings`. Settings that only mean
        something with the NADE output (``nade_*``) are dropped when an explicit ``output`` is ``bernoulli``
        and the preset set them, so ``--preset music --output bernoulli`` makes a valid Bernoulli run.

    Raises
    ------
    LapMusicError
        For an unknown preset name.
    """
    given = {k: v for k, v in explicit.items() if v is not None}
    settings = dict(get_preset(name).settings) if name is not None else {}
    if given.get("output", settings.get("output")) != "nade":
        settings = {k: v for k, v in settings.items() if not k.startswith("nade_")}
    if train_chords is not None and settings.get("nade_vocab") and "nade_vocab" not in given:
        settings["nade_vocab"] = vocabulary_for(train_chords, settings["nade_vocab"])
    settings.update(given)
    return settings


def presets_help() -> str:
    """One line per preset: its name, what it is for and the options it sets (``--help``)."""
    return "; ".join(f"{p.name}: {p.title} ({p.as_options()})" for p in PRESETS.values())
