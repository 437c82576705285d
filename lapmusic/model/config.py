"""What defines the network: :class:`ModelConfig`, and the checks of its fields.

Torch-free, so settings can be checked before anything heavy is imported. The training run's settings
(:class:`lapmusic.training.config.TrainConfig`) hold one as ``config.model``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lapmusic.core.errors import LapMusicError

CELLS = ("rnn", "gru", "lstm")
OUTPUTS = ("bernoulli", "nade")


def is_int(value) -> bool:
    """An ``int`` that is not a ``bool`` (JSON's ``true`` must not pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """An ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def range_problems(obj, ints: dict, floats: dict) -> list[str]:
    """What is wrong with the numeric fields of ``obj``, one sentence each.

    Parameters
    ----------
    obj : object
        Anything whose attributes are the fields named below.
    ints : dict
        ``name -> (minimum, maximum, may be null)`` for integer fields.
    floats : dict
        ``name -> (low, high, may be null, low excluded)`` for real fields (finite, bools refused).

    Returns
    -------
    list of str
        One message per field out of its type or range, in the order of ``ints`` then ``floats``.
    """
    problems = []
    for name, (low, high, optional) in ints.items():
        value = getattr(obj, name)
        if value is None and optional:
            continue
        if not is_int(value) or not low <= value <= high:
            problems.append(f"{name} must be an integer from {low} to {high:,}{' (or null)' if optional else ''}, "
                            f"not {value!r}")
    for name, (low, high, optional, open_low) in floats.items():
        value = getattr(obj, name)
        if value is None and optional:
            continue
        if (not is_number(value) or not math.isfinite(value) or value > high
                or (value <= low if open_low else value < low)):
            bound = ("positive" if open_low else "non-negative") if low == 0 else f"at least {low:g}"
            bound += f" and at most {high:g}" if high < math.inf else " and finite"
            problems.append(f"{name} must be {bound}{' (or null)' if optional else ''}, not {value!r}")
    return problems


# name -> (minimum, maximum, may be null). The maxima bound memory before anything is allocated: hidden 4096
# is a 4096x4096 recurrent matrix (64 MB, 256 MB for an LSTM's four gates).
_INT_FIELDS = {"hidden": (1, 4096, False), "nade_hidden": (1, 4096, False), "nade_vocab": (0, 16384, False),
               "nade_vocab_rank": (0, 4096, False),
               "nade_repeat_window": (1, 4096, False)}
_FLOAT_FIELDS = {"dropout": (0.0, 0.99, False, False)}
_BOOL_FIELDS = ("nade_skip", "nade_repeat", "readout_skip")


@dataclass(frozen=True)
class ModelConfig:
    """The settings that define a :class:`lapmusic.model.rnn.PianoRollRNN` (and its saved weights' shapes).

    Attributes
    ----------
    hidden : int
        Recurrent units ``p`` (1 to 4096); with the LAE initialisation also the LAE's ``p``.
    cell : {"rnn", "gru", "lstm"}
        The recurrent cell: the paper's Elman ``tanh`` RNN, or a GRU/LSTM baseline (random init only).
    dropout : float
        Dropout rate on the recurrent states before the output layer, in ``[0, 0.99]``.
    output : {"bernoulli", "nade"}
        The output layer: 88 independent sigmoids, or an RNN-NADE over the keys of the next frame.
    nade_hidden : int
        NADE hidden units ``H`` (``output="nade"``).
    nade_skip : bool
        NADE biases also linear in the frame just read (``output="nade"``).
    nade_vocab : int
        ``N > 0``: mix the NADE with a softmax over the ``N`` commonest training chords (``output="nade"``).
    nade_vocab_rank : int
        ``r > 0``: the chord logits through ``r`` units (a rank-``r`` weight, ``r (p + N)`` multiply-adds a
        frame instead of ``p N``); 0: a full ``Linear(p, N)`` (with ``nade_vocab``).
    nade_repeat : bool
        Mix the NADE output with "copy a frame just read" (``output="nade"``).
    nade_repeat_window : int
        With ``nade_repeat``: the copy chooses among the last ``L`` frames read (1: the frame read).
    readout_skip : bool
        Bernoulli logits also get ``W_skip x_t``, a linear term in the frame just read (``output="bernoulli"``).
    """

    hidden: int = 128
    cell: str = "rnn"
    dropout: float = 0.0
    output: str = "bernoulli"
    nade_hidden: int = 64
    nade_skip: bool = False
    nade_vocab: int = 0
    nade_vocab_rank: int = 0
    nade_repeat: bool = False
    nade_repeat_window: int = 1
    readout_skip: bool = False

    def problems(self) -> list[str]:
        """Every field out of its type or range, and every combination that does not make a network.

        Returns
        -------
        list of str
            One sentence each, in the words of the fields (``[]`` when the config is valid).
        """
        problems = []
        if not isinstance(self.cell, str):
            problems.append(f"cell must be a string, not {self.cell!r}")
        elif self.cell not in CELLS:
            problems.append(f"cell must be one of {list(CELLS)}, not {self.cell!r}")
        if self.output not in OUTPUTS:
            problems.append(f"output must be one of {list(OUTPUTS)}, not {self.output!r}")
        for name in _BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be true or false, not {getattr(self, name)!r}")
        if self.nade_skip is True and self.output != "nade":
            problems.append("nade_skip needs output 'nade'")
        if is_int(self.nade_vocab) and self.nade_vocab != 0 and self.output != "nade":
            problems.append("nade_vocab needs output 'nade'")
        if is_int(self.nade_vocab_rank) and self.nade_vocab_rank != 0 and not self.nade_vocab:
            problems.append("nade_vocab_rank needs nade_vocab")
        if self.nade_repeat is True and self.output != "nade":
            problems.append("nade_repeat needs output 'nade'")
        if is_int(self.nade_repeat_window) and self.nade_repeat_window != 1 and self.nade_repeat is not True:
            problems.append("nade_repeat_window needs nade_repeat")
        if self.readout_skip is True and self.output != "bernoulli":
            problems.append("readout_skip needs output 'bernoulli'; with output 'nade' use nade_skip")
        return problems + range_problems(self, _INT_FIELDS, _FLOAT_FIELDS)

    def validate(self) -> None:
        """Raise unless :meth:`problems` is empty.

        Raises
        ------
        LapMusicError
            ``"invalid model config: "`` and every problem found.
        """
        problems = self.problems()
        if problems:
            raise LapMusicError("invalid model config: " + "; ".join(problems))
