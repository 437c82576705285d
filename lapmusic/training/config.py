"""The settings of a training run: :class:`TrainConfig` (saved as a run folder's ``config.json``) and their checks.

``config.json`` is flat: every setting at the top level, the network's (:class:`ModelConfig`) included, as the
command-line options, the sweep specs and every run folder written so far name them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from lapmusic.core.errors import LapMusicError
from lapmusic.model.config import ModelConfig, is_number, range_problems

READOUT_STARTS = ("fit", "constant", "zero")
RESUMABLE_CHANGES = ("epochs", "patience", "max_seconds")  # the settings a resume may change (to train longer)
MODEL_KEYS = tuple(f.name for f in dataclasses.fields(ModelConfig))


@dataclass
class TrainConfig:
    """Everything that defines a training run.

    Attributes
    ----------
    dataset : str
        Dataset key (``jsb``, ``nottingham``, ``musedata``, ``pianomidi``, ``bach``, ``user:NAME``).
    model : ModelConfig
        The network: cell, sizes, dropout, output layer and its options.
    init : {"lae", "random"}
        Pre-training: the LAE initialisation of the paper, or PyTorch's random init.
    epochs : int
        Training epochs (epoch 0 is the network right after initialisation).
    lr : float
        Learning rate.
    batch_size : int
        Pieces per mini-batch.
    seed : int
        Seeds the weights, the batch order, dropout and the input noise.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    max_sequences : int or None
        Keep the first ``N`` pieces of every split.
    max_train_sequences : int or None
        Train on a fixed random subset of ``N`` training pieces, the same for every seed (budget runs).
    readout_skip_fit : bool
        LAE init with ``readout_start="fit"`` and the readout skip: fit ``W_skip`` jointly with the
        readout (else it starts at zero).
    bptt : int
        Truncated-BPTT window in frames.
    optimizer : {"adam", "sgd"}
        Adam, or SGD with ``momentum``.
    momentum : float
        SGD momentum.
    clip : float or None
        Maximum gradient norm (``None``: no clipping).
    input_noise : float
        ``q`` in ``[0, 1)``: training inputs only, each on-note dropped with probability ``q`` and off-keys
        switched on so every key keeps its training frequency (0: off).
    weight_decay : float
        L2 weight decay.
    patience : int or None
        Early stopping after this many epochs without a better validation NLL (``None``: never).
    max_seconds : float or None
        Start no new epoch once this run's epochs (training and validation, summed over resumes) took this
        long.
    lr_patience : int
        Multiply the learning rate by ``lr_factor`` after this many epochs without improvement.
    lr_factor : float
        The factor, in ``(0, 1]``.
    min_lr : float
        The learning rate's floor.
    relative_lr : bool
        Scale each weight matrix's learning rate by its RMS at the start of training.
    warmup_steps : int
        Linear learning-rate warm-up over the first optimizer steps (0: none).
    freeze_recurrent_epochs : int
        Train only the output layer in the first epochs, the recurrent layer frozen as initialised (0: none).
    lae_solver : {"auto", "gram", "exact", "approx"}
        The LAE solver (``lapmusic.lae.fit.fit_lae``; ``"auto"``: gram when the lag-weighted data matrix has at
        most 4,096 non-zero columns, as with the default ``lae_decay``, else approx).
    lae_max_lag : int or None
        Keep the last ``L`` frames of every prefix in the LAE's data matrix (``None``: the longest piece,
        or where ``lae_decay ** L < 1e-12``: the same LAE, cheaper).
    lae_path : str or None
        Reuse an LAE saved with ``LinearAutoencoder.save`` (its ``p`` must equal ``model.hidden``).
    alpha : float or None
        Input scale of the LAE init (``None``: chosen from the data with ``alpha_target``).
    alpha_target : float
        99 % of the initial pre-activations lie within ``[-alpha_target, alpha_target]``.
    lae_max_radius : float or None
        Scale ``W_rec = B`` down to this spectral radius (``None``: ``B`` exactly).
    lae_decay : float or None
        Weight lag ``k`` of the LAE's data matrix by ``lae_decay ** k`` (``None`` or 1: the paper's LAE).
    rec_radius : float or None
        Scale ``W_rec`` to exactly this spectral radius, either init (``None``: as initialised).
    readout_start : {"fit", "constant", "zero"}
        LAE init readout: fitted on the network's states, the key frequencies only, or zeros.
    readout_ridge : float
        Ridge of the readout fit, relative to the mean squared state.
    readout_steps : int
        L-BFGS logistic-regression steps after the least-squares readout (0: none).
    readout_max_frames : int
        (state, next frame) pairs used to fit the readout.
    vocab_fit_steps : int
        LAE init with a chord vocabulary: L-BFGS steps of a softmax regression that fits the chord logits on the
        same states to the chords that follow (``lapmusic.model.lae_init.fit_chord_logits``; 0: the
        vocabulary's frequencies, the same for every state).
    eval_batch_size : int
        Pieces per evaluation batch.
    """

    dataset: str = "jsb"
    model: ModelConfig = field(default_factory=ModelConfig)
    init: str = "lae"
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"
    max_sequences: int | None = None
    max_train_sequences: int | None = None
    readout_skip_fit: bool = True
    bptt: int = 100
    optimizer: str = "adam"
    momentum: float = 0.9
    clip: float | None = 1.0
    input_noise: float = 0.0
    weight_decay: float = 0.0
    patience: int | None = 5
    max_seconds: float | None = None
    lr_patience: int = 1
    lr_factor: float = 0.5
    min_lr: float = 1e-5
    relative_lr: bool = False
    warmup_steps: int = 0
    freeze_recurrent_epochs: int = 0
    lae_solver: str = "auto"
    lae_max_lag: int | None = None
    lae_path: str | None = None
    alpha: float | None = None
    alpha_target: float = 1.5
    lae_max_radius: float | None = None
    lae_decay: float | None = 0.3
    rec_radius: float | None = None
    readout_start: str = "fit"
    readout_ridge: float = 1.0
    readout_steps: int = 20
    readout_max_frames: int = 100_000
    vocab_fit_steps: int = 0
    eval_batch_size: int = 64

    def to_dict(self) -> dict:
        """The flat form (``config.json``): every setting at the top level, the model's included.

        Returns
        -------
        dict
            JSON-ready; :meth:`from_dict` reads it back to an equal config.
        """
        flat = dataclasses.asdict(self)
        flat.update(flat.pop("model"))
        return flat

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> "TrainConfig":
        """A config from flat settings, named as in ``config.json`` (command-line options, sweep specs).

        Parameters
        ----------
        settings : mapping
            Any subset of the flat names; the others keep their defaults.

        Returns
        -------
        TrainConfig
            Not validated: call :meth:`validate`.

        Raises
        ------
        LapMusicError
            For a name that is no setting.
        """
        settings = dict(settings)
        _refuse_unknown(settings)
        model = ModelConfig(**{name: settings.pop(name) for name in MODEL_KEYS if name in settings})
        return cls(model=model, **settings)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """A validated config from JSON: a run folder's flat ``config.json``, or :func:`dataclasses.asdict`'s form
        with the network's settings under ``"model"``.

        Unknown keys and missing keys are errors (a missing ``dataset`` must never silently become the
        default); keys added after :data:`CONFIG_KEYS_V1` may be missing (they default to the behaviour before
        they existed).

        Raises
        ------
        LapMusicError
            For anything but a JSON object, an unknown or missing key, a setting given twice or an invalid
            value (:meth:`validate`).
        """
        if not isinstance(data, dict):
            raise LapMusicError("a training config must be a JSON object")
        if "model" in data:
            data = dict(data)
            model = data.pop("model")
            if not isinstance(model, dict):
                raise LapMusicError("the training config's model must be a JSON object of the network's settings")
            twice = sorted(set(model) & set(data))
            if twice:
                raise LapMusicError(f"the training config gives {twice} both in model and at the top level")
            data.update(model)
        _refuse_unknown(data)
        missing = sorted(CONFIG_KEYS_V1 - set(data))
        if missing:
            raise LapMusicError(f"the training config misses the keys {missing}; "
                                "it was edited or damaged: start the run again with complete settings")
        config = cls.from_settings(data)
        config.validate()
        return config

    def validate(self) -> None:
        """Check every field's type and range before anything is allocated.

        Sizes are bounded (a ``hidden`` of 1e9 would try to allocate hundreds of GB), bools are not integers
        here, and floats must be finite.

        Raises
        ------
        LapMusicError
            ``"invalid training config: "`` and every problem found, in the settings' flat names.
        """
        problems = []
        for name in ("dataset", "init", "optimizer", "lae_solver", "device", "readout_start"):
            if not isinstance(getattr(self, name), str):
                problems.append(f"{name} must be a string, not {getattr(self, name)!r}")
        if problems:
            raise LapMusicError("invalid training config: " + "; ".join(problems))
        if not isinstance(self.model, ModelConfig):
            raise LapMusicError(f"invalid training config: model must be a ModelConfig, not {self.model!r}")
        if not self.dataset:
            problems.append("dataset must not be empty")
        if self.init not in ("lae", "random"):
            problems.append(f"init must be 'lae' or 'random', not {self.init!r}")
        problems += self.model.problems()
        if self.init == "lae" and self.model.cell != "rnn":
            problems.append("init 'lae' needs cell 'rnn' (GRU/LSTM are random-init baselines)")
        if self.optimizer not in ("adam", "sgd"):
            problems.append(f"optimizer must be 'adam' or 'sgd', not {self.optimizer!r}")
        if self.readout_start not in READOUT_STARTS:
            problems.append(f"readout_start must be one of {list(READOUT_STARTS)}, not {self.readout_start!r}")
        if self.rec_radius is not None and self.model.cell != "rnn":
            problems.append("rec_radius needs cell 'rnn'")
        if self.lae_solver not in ("auto", "gram", "exact", "approx"):
            problems.append(f"lae_solver must be 'auto', 'gram', 'exact' or 'approx', not {self.lae_solver!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            problems.append(f"device must be auto, cpu or cuda, not {self.device!r}")
        if self.lae_path is not None and not isinstance(self.lae_path, str):
            problems.append(f"lae_path must be a path or null, not {self.lae_path!r}")
        if not is_number(self.input_noise) or not 0.0 <= self.input_noise < 1.0:
            problems.append(f"input_noise must be a number in [0, 1) (0: off), not {self.input_noise!r}")
        for name in ("relative_lr", "readout_skip_fit"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be true or false, not {getattr(self, name)!r}")
        problems += range_problems(self, _INT_FIELDS, _FLOAT_FIELDS)
        if problems:
            raise LapMusicError("invalid training config: " + "; ".join(problems))


def _refuse_unknown(settings: Mapping[str, Any]) -> None:
    known = set(MODEL_KEYS) | {f.name for f in dataclasses.fields(TrainConfig)} - {"model"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise LapMusicError(f"unknown training config keys {unknown}; known keys: {sorted(known)}")


# The keys of config.json when missing keys became an error: a config.json without one of them is refused
# (TrainConfig.from_dict). Written out, not derived: a field added later may be missing from older folders.
CONFIG_KEYS_V1 = frozenset((
    "dataset", "hidden", "init", "epochs", "lr", "batch_size", "seed", "device", "max_sequences",
    "max_train_sequences", "cell", "bptt", "optimizer", "momentum", "clip", "dropout", "weight_decay",
    "patience", "lr_patience", "lr_factor", "min_lr", "relative_lr", "warmup_steps", "lae_solver",
    "lae_max_lag", "lae_path", "alpha", "alpha_target", "lae_max_radius", "readout_steps", "readout_max_frames",
    "eval_batch_size",
))
# name -> (minimum, maximum, may be null): the maxima bound memory and time before anything is allocated
_INT_FIELDS = {
    "epochs": (1, 100_000, False), "batch_size": (1, 4096, False),
    "bptt": (1, 100_000, False), "eval_batch_size": (1, 4096, False), "readout_max_frames": (1, 10_000_000, False),
    "seed": (0, 2**32 - 1, False), "readout_steps": (0, 10_000, False), "lr_patience": (0, 100_000, False),
    "warmup_steps": (0, 10_000_000, False), "freeze_recurrent_epochs": (0, 100_000, False),
    "vocab_fit_steps": (0, 10_000, False),
    "max_sequences": (1, 10_000_000, True),
    "max_train_sequences": (1, 10_000_000, True), "patience": (1, 100_000, True), "lae_max_lag": (1, 10_000_000, True),
}
# name -> (low, high, may be null, low excluded)
_FLOAT_FIELDS = {
    "lr": (0.0, math.inf, False, True), "momentum": (0.0, 1.0, False, False), "clip": (0.0, math.inf, True, True),
    "weight_decay": (0.0, math.inf, False, False),
    "lr_factor": (0.0, 1.0, False, True), "min_lr": (0.0, math.inf, False, False),
    "alpha": (0.0, math.inf, True, True), "alpha_target": (0.0, math.inf, False, True),
    "lae_max_radius": (0.0, math.inf, True, True),
    "rec_radius": (0.0, 10.0, True, True), "max_seconds": (0.0, math.inf, True, True),
    "lae_decay": (0.0, 1.0, True, True), "readout_ridge": (0.0, 1e6, False, False),
}
