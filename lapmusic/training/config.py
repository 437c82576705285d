"""The settings of a training run: :class:`TrainConfig` (saved as ``config.json``) and its validation.

Split out of ``train.py`` so the settings can be read without the training loop; ``lapmusic.training.train``
re-exports every name here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from lapmusic.core.errors import LapMusicError
from lapmusic.model.rnn import CELLS, OUTPUTS
from lapmusic.training.rundir import _is_int, _is_number

READOUT_STARTS = ("fit", "constant", "zero")
RESUMABLE_CHANGES = ("epochs", "patience", "max_seconds")  # the settings a resume may change (to train longer)


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as ``config.json``)."""

    dataset: str = "jsb"
    hidden: int = 128
    init: str = "lae"  # "lae" | "random"
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    max_sequences: int | None = None  # first N pieces of every split
    max_train_sequences: int | None = None  # a fixed random subset of N training pieces (budget runs)
    cell: str = "rnn"  # "rnn" | "gru" | "lstm"
    output: str = "bernoulli"  # "bernoulli" (independent keys) | "nade" (RNN-NADE, lapmusic/nade.py)
    nade_hidden: int = 64  # NADE hidden units (output "nade" only)
    nade_skip: bool = False  # NADE biases also linear in the frame just read (lapmusic/nade.py, "Previous-frame skip")
    nade_vocab: int = 0  # N > 0: mix the NADE with a softmax over the N commonest training chords (lapmusic/chordvocab.py)
    nade_repeat: bool = False  # mix the NADE output with "copy the frame just read" (lapmusic/repeatmix.py)
    nade_repeat_window: int = 1  # with nade_repeat: the copy chooses among the last L frames read (1: the frame read)
    readout_skip: bool = False  # Bernoulli logits also get W_skip x_t (the frame just read); docs/training.md
    readout_skip_fit: bool = True  # LAE init, readout_start "fit": fit W_skip with the readout (else zero)
    bptt: int = 100  # truncated-BPTT window in frames
    optimizer: str = "adam"  # "adam" | "sgd" (with momentum)
    momentum: float = 0.9
    clip: float | None = 1.0  # max gradient norm (None: no clipping)
    dropout: float = 0.0  # on the hidden states, before the readout
    input_noise: float = 0.0  # training inputs only: on-notes dropped w.p. q, keys switched on to keep density
    weight_decay: float = 0.0
    patience: int | None = 5  # early stopping after this many epochs without a better validation NLL
    max_seconds: float | None = None  # no new epoch once the epochs (training + validation) took this long
    lr_patience: int = 1  # halve the learning rate after this many epochs without improvement
    lr_factor: float = 0.5
    min_lr: float = 1e-5
    relative_lr: bool = False  # scale each weight matrix's lr by its initial RMS (see _parameter_groups)
    warmup_steps: int = 0  # linear learning-rate warm-up over the first optimizer steps (0: none)
    lae_solver: str = "approx"  # "exact" | "approx"
    lae_max_lag: int | None = None  # None: the longest piece, or where lae_decay**k < 1e-12 (same LAE, cheaper)
    lae_path: str | None = None  # reuse an LAE saved with LinearAutoencoder.save (p must equal hidden)
    alpha: float | None = None  # input scale of the LAE init; None: chosen from the data (alpha_target)
    alpha_target: float = 1.5  # 99 % of initial pre-activations within [-alpha_target, alpha_target]
    lae_max_radius: float | None = None  # scale W_rec = B down to this spectral radius (None: B exactly)
    lae_decay: float | None = 0.3  # weight lag k of Xi by lae_decay**k (None or 1: the paper's LAE); docs/training.md
    rec_radius: float | None = None  # scale W_rec to exactly this spectral radius, both inits (None: as is)
    readout_start: str = "fit"  # LAE init readout: "fit" | "constant" (key frequencies) | "zero"
    readout_ridge: float = 1.0  # ridge of the readout fit, relative to the mean squared state; docs/training.md
    readout_steps: int = 20  # L-BFGS logistic-regression steps after the least-squares readout (0: none)
    readout_max_frames: int = 100_000  # (state, next frame) pairs used to fit the readout
    eval_batch_size: int = 64

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """A validated config from JSON; unknown keys and missing keys are errors (a missing ``dataset``
        must never silently become the default). Keys added after :data:`CONFIG_KEYS_V1` may be missing
        (they default to the behaviour before they existed)."""
        if not isinstance(data, dict):
            raise LapMusicError("a training config must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LapMusicError(f"unknown training config keys {unknown}; known keys: {sorted(known)}")
        missing = sorted((CONFIG_KEYS_V1 & known) - set(data))
        if missing:
            raise LapMusicError(f"the training config misses the keys {missing}; "
                                "it was edited or damaged: start the run again with complete settings")
        config = cls(**data)
        config.validate()
        return config

    def validate(self) -> None:
        """Check every field's type and range before anything is allocated (sizes are bounded: a
        ``hidden`` of 1e9 would try to allocate hundreds of GB). Bools are not integers here, and floats
        must be finite."""
        problems = []
        for name in ("dataset", "init", "cell", "optimizer", "lae_solver", "device", "readout_start"):
            if not isinstance(getattr(self, name), str):
                problems.append(f"{name} must be a string, not {getattr(self, name)!r}")
        if problems:
            raise LapMusicError("invalid training config: " + "; ".join(problems))
        if not self.dataset:
            problems.append("dataset must not be empty")
        if self.init not in ("lae", "random"):
            problems.append(f"init must be 'lae' or 'random', not {self.init!r}")
        if self.cell not in CELLS:
            problems.append(f"cell must be one of {list(CELLS)}, not {self.cell!r}")
        if self.output not in OUTPUTS:
            problems.append(f"output must be one of {list(OUTPUTS)}, not {self.output!r}")
        if self.init == "lae" and self.cell != "rnn":
            problems.append("init 'lae' needs cell 'rnn' (GRU/LSTM are random-init baselines)")
        if self.optimizer not in ("adam", "sgd"):
            problems.append(f"optimizer must be 'adam' or 'sgd', not {self.optimizer!r}")
        if self.readout_start not in READOUT_STARTS:
            problems.append(f"readout_start must be one of {list(READOUT_STARTS)}, not {self.readout_start!r}")
        if self.rec_radius is not None and self.cell != "rnn":
            problems.append("rec_radius needs cell 'rnn'")
        if self.lae_solver not in ("exact", "approx"):
            problems.append(f"lae_solver must be 'exact' or 'approx', not {self.lae_solver!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            problems.append(f"device must be auto, cpu or cuda, not {self.device!r}")
        if self.lae_path is not None and not isinstance(self.lae_path, str):
            problems.append(f"lae_path must be a path or null, not {self.lae_path!r}")
        if not _is_number(self.input_noise) or not 0.0 <= self.input_noise < 1.0:
            problems.append(f"input_noise must be a number in [0, 1) (0: off), not {self.input_noise!r}")
        for name in ("relative_lr", "nade_skip", "nade_repeat", "readout_skip", "readout_skip_fit"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be true or false, not {getattr(self, name)!r}")
        if self.nade_skip is True and self.output != "nade":
            problems.append("nade_skip needs output 'nade'")
        if _is_int(self.nade_vocab) and self.nade_vocab != 0 and self.output != "nade":
            problems.append("nade_vocab needs output 'nade'")
        if self.nade_repeat is True and self.output != "nade":
            problems.append("nade_repeat needs output 'nade'")
        if _is_int(self.nade_repeat_window) and self.nade_repeat_window != 1 and self.nade_repeat is not True:
            problems.append("nade_repeat_window needs nade_repeat")
        if self.readout_skip is True and self.output != "bernoulli":
            problems.append("readout_skip needs output 'bernoulli'; with output 'nade' use nade_skip")
        for name, (low, high, optional) in _INT_FIELDS.items():
            value = getattr(self, name)
            if value is None and optional:
                continue
            if not _is_int(value) or not low <= value <= high:
                problems.append(f"{name} must be an integer from {low} to {high:,}{' (or null)' if optional else ''}, "
                                f"not {value!r}")
        for name, (low, high, optional, open_low) in _FLOAT_FIELDS.items():
            value = getattr(self, name)
            if value is None and optional:
                continue
            if (not _is_number(value) or not math.isfinite(value) or value > high
                    or (value <= low if open_low else value < low)):
                bound = ("positive" if open_low else "non-negative") if low == 0 else f"at least {low:g}"
                bound += f" and at most {high:g}" if high < math.inf else " and finite"
                problems.append(f"{name} must be {bound}{' (or null)' if optional else ''}, not {value!r}")
        if problems:
            raise LapMusicError("invalid training config: " + "; ".join(problems))


# The keys of config.json when missing keys became an error: a config.json without one of them is refused
# (TrainConfig.from_dict). Written out, not derived: a field added later may be missing from older folders.
CONFIG_KEYS_V1 = frozenset((
    "dataset", "hidden", "init", "epochs", "lr", "batch_size", "seed", "device", "max_sequences",
    "max_train_sequences", "cell", "bptt", "optimizer", "momentum", "clip", "dropout", "weight_decay",
    "patience", "lr_patience", "lr_factor", "min_lr", "relative_lr", "warmup_steps", "lae_solver",
    "lae_max_lag", "lae_path", "alpha", "alpha_target", "lae_max_radius", "readout_steps", "readout_max_frames",
    "eval_batch_size",
))
# name -> (minimum, maximum, may be null). The maxima bound memory and time before anything is allocated:
# hidden 4096 is a 4096x4096 recurrent matrix (64 MB, 256 MB for an LSTM's four gates).
_INT_FIELDS = {
    "hidden": (1, 4096, False), "epochs": (1, 100_000, False), "batch_size": (1, 4096, False),
    "bptt": (1, 100_000, False), "eval_batch_size": (1, 4096, False), "readout_max_frames": (1, 10_000_000, False),
    "seed": (0, 2**32 - 1, False), "readout_steps": (0, 10_000, False), "lr_patience": (0, 100_000, False),
    "warmup_steps": (0, 10_000_000, False), "max_sequences": (1, 10_000_000, True),
    "max_train_sequences": (1, 10_000_000, True), "patience": (1, 100_000, True), "lae_max_lag": (1, 10_000_000, True),
    "nade_hidden": (1, 4096, False), "nade_vocab": (0, 16384, False),
    "nade_repeat_window": (1, 4096, False),
}
# name -> (low, high, may be null, low excluded)
_FLOAT_FIELDS = {
    "lr": (0.0, math.inf, False, True), "momentum": (0.0, 1.0, False, False), "clip": (0.0, math.inf, True, True),
    "dropout": (0.0, 0.99, False, False), "weight_decay": (0.0, math.inf, False, False),
    "lr_factor": (0.0, 1.0, False, True), "min_lr": (0.0, math.inf, False, False),
    "alpha": (0.0, math.inf, True, True), "alpha_target": (0.0, math.inf, False, True),
    "lae_max_radius": (0.0, math.inf, True, True),
    "rec_radius": (0.0, 10.0, True, True), "max_seconds": (0.0, math.inf, True, True), "lae_decay": (0.0, 1.0, True, True), "readout_ridge": (0.0, 1e6, False, False),
}
