"""The training options shared by ``lapmusic train`` and ``compare``, and their translation into a
:class:`lapmusic.training.config.TrainConfig` (with config errors said in the words of the command line).

Light on purpose: ``--help`` builds these parsers without importing torch.
"""

from __future__ import annotations

import argparse

from lapmusic.cli.common import non_negative_int, positive_int, positive_seconds
from lapmusic.core.errors import LapMusicError


def add_training_options(p: argparse.ArgumentParser) -> None:
    """Add the training settings shared by ``train`` and ``compare`` to ``p`` (defaults: the preset's, else
    TrainConfig's)."""
    from lapmusic.training.presets import PRESETS, presets_help

    p.add_argument("--preset", choices=list(PRESETS),
                   help="start from a named set of settings; every option given explicitly wins over it. "
                   + presets_help().replace("%", "%%") + " (default: no preset, TrainConfig's defaults)")
    p.add_argument("--lr", type=float, help="learning rate (default 1e-3)")
    p.add_argument("--batch-size", type=positive_int, help="pieces per mini-batch (default 32)")
    p.add_argument("--bptt", type=positive_int, help="truncated-BPTT window in frames (default 100)")
    p.add_argument("--eval-batch-size", type=positive_int,
                   help="pieces per evaluation batch; fewer use less memory (default 64)")
    p.add_argument("--optimizer", choices=["adam", "sgd"], help="adam (default) or sgd with momentum 0.9")
    p.add_argument("--dropout", type=float, help="dropout on the hidden states (default 0)")
    p.add_argument("--weight-decay", type=float, help="L2 weight decay (default 0)")
    p.add_argument("--input-noise", type=float, metavar="Q",
                   help="training only: drop each input note with probability Q, 0 <= Q < 1, and switch off-keys "
                   "on so that each key keeps its training frequency; targets and evaluation stay clean "
                   f"(default {_default('input_noise')}: off)")
    p.add_argument("--patience", type=positive_int,
                   help="stop after this many epochs without a better validation NLL (default 5)")
    p.add_argument("--max-seconds", type=positive_seconds, metavar="S",
                   help="start no new epoch once this run's epochs (training + validation, summed over resumes) "
                   "took S seconds; the best epoch's model is then tested as usual (default: no limit)")
    p.add_argument("--lae-solver", choices=["auto", "gram", "exact", "approx"],
                   help="LAE solver for --init lae: auto (default) takes gram (eigenvectors of the small Gram "
                   "matrix of the lag-weighted data) up to 4,096 non-zero columns, else approx")
    p.add_argument("--alpha", type=float,
                   help="input scale of the LAE init (default: chosen from the data so that 99%% of the "
                   "initial pre-activations lie in [-1.5, 1.5]; their median is then about 0.1)")
    p.add_argument("--max-train-sequences", type=positive_int,
                   help="train on a fixed random subset of N training pieces, the same for every seed (default: all)")
    p.add_argument("--lae-file", dest="lae_path", metavar="FILE",
                   help="for --init lae: reuse an LAE saved by `lapmusic lae --out FILE`, p must equal --hidden "
                   "(default: fit the LAE in the run)")
    p.add_argument("--output", choices=["bernoulli", "nade"],
                   help="output layer (default bernoulli: one independent sigmoid per key; nade: RNN-NADE, "
                   "the keys of a frame drawn low to high, each conditioned on the lower ones and the state)")
    p.add_argument("--nade-hidden", type=positive_int,
                   help="hidden units of the NADE output (default 64; only with --output nade)")
    p.add_argument("--nade-skip", action="store_true", default=None,
                   help="NADE output: its biases also get a linear term in the previous frame, so holding a key "
                   "or repeating a chord is a first-order feature (default off; only with --output nade)")
    p.add_argument("--nade-vocab", type=non_negative_int, metavar="N",
                   help="NADE output: mix it with a softmax over the N most frequent chords (whole frames) of the "
                   "training split, so a whole known chord can be chosen at once (default 0: off; only with "
                   "--output nade)")
    p.add_argument("--nade-vocab-rank", type=non_negative_int, metavar="R",
                   help="with --nade-vocab: the chord logits through R units (a rank-R map), R (hidden + N) "
                   "multiply-adds a frame instead of hidden x N: on JSB 1.1-1.2x faster training for 0.04-0.09 "
                   "nats of NLL (default 0: full rank; docs/models.md)")
    p.add_argument("--nade-repeat", action="store_true", default=None,
                   help="NADE output: mix it with a component that copies the previous frame exactly, so holding a "
                   "chord is one choice instead of 88 key choices (default off; only with --output nade; "
                   "docs/models.md)")
    p.add_argument("--nade-repeat-window", type=positive_int, metavar="L",
                   help="with --nade-repeat: the copy chooses among the last L frames read (weights from the state), "
                   "so returning to a chord heard a few frames earlier is one choice too (default 1: the previous "
                   "frame only; docs/models.md, \"The sampling recipe\")")
    p.add_argument("--readout-skip", action="store_true", default=None,
                   help="Bernoulli output: the logits also get a linear term in the frame just read (W_skip x_t, "
                   "88x88, starts at zero; with --init lae and --readout-start fit fitted together with the readout), so copying the "
                   "previous frame is a first-order feature (default off; docs/models.md)")

    p.add_argument("--lr-patience", type=non_negative_int,
                   help="multiply the learning rate by 0.5 after this many epochs without a better validation "
                   f"NLL (default {_default('lr_patience')})")
    p.add_argument("--relative-lr", action=argparse.BooleanOptionalAction, default=None,
                   help="scale each weight matrix's learning rate by its size at the start, so the LAE's recurrent "
                   "matrix moves at about 0.4 of the rate (default off; on in --preset music; docs/results.md)")
    p.add_argument("--lae-max-lag", type=positive_int,
                   help="for --init lae: keep only the last L frames of every prefix in the LAE's data matrix "
                   "(default: the longest piece, or with --lae-decay below 1 the lag where GAMMA**L < 1e-12)")
    p.add_argument("--lae-decay", type=float, metavar="GAMMA",
                   help="for --init lae: weight lag k of the LAE's data matrix by GAMMA**k, 0 < GAMMA <= 1; "
                   f"1 is the paper's unweighted LAE (default {_default('lae_decay')})")
    p.add_argument("--rec-radius", type=float, metavar="R",
                   help="scale the recurrent matrix to spectral radius exactly R, for either init (default: as "
                   "initialised: about 0.98 for the LAE's B, about 0.58 for PyTorch's random init)")
    p.add_argument("--readout-start", choices=["fit", "constant", "zero"],
                   help="for --init lae: readout fitted on the LAE states (fit), key frequencies only "
                   f"(constant) or zeros (default {_default('readout_start')})")
    p.add_argument("--readout-ridge", type=float,
                   help="ridge of the least-squares readout fit, relative to the mean state energy "
                   f"(default {_default('readout_ridge')})")
    p.add_argument("--readout-steps", type=non_negative_int,
                   help=f"L-BFGS logistic steps after the least-squares readout (default {_default('readout_steps')})")
    p.add_argument("--alpha-target", type=float,
                   help="LAE init: 99%% of the initial pre-activations within [-T, T] "
                   f"(default {_default('alpha_target')}; ignored with --alpha)")


_TRAINING_OPTIONS = ("lr", "batch_size", "bptt", "eval_batch_size", "optimizer", "dropout", "input_noise", "weight_decay",
                     "patience", "lae_solver", "alpha", "max_train_sequences", "lae_path", "lr_patience", "lae_max_lag",
                     "lae_decay", "rec_radius", "readout_start", "readout_ridge", "readout_steps", "alpha_target",
                     "output", "nade_hidden", "nade_skip", "nade_vocab", "nade_vocab_rank", "nade_repeat", "nade_repeat_window", "readout_skip",
                     "max_seconds", "relative_lr")


# TrainConfig's defaults quoted by help texts, written out so that --help imports no torch (test_recipes.py checks).
RECIPE_DEFAULTS = {"lr_patience": 1, "lae_decay": 0.3, "readout_start": "fit", "readout_ridge": 1.0,
                   "readout_steps": 20, "alpha_target": 1.5, "input_noise": 0.0}


def _default(name: str):
    return RECIPE_DEFAULTS[name]


def training_config(args: argparse.Namespace, *, train_chords: int | None = None, **fields):
    """The validated TrainConfig of the training options in ``args``, overridden by ``fields``.

    Options left unset (None) keep the value of ``--preset`` (:func:`lapmusic.training.presets.resolve`), else
    TrainConfig's default; a config error is raised as a LapMusicError that names the options the user typed
    (``--nade-skip needs --output nade``). ``train_chords``: the distinct chords of the training split, which
    cap a preset's chord vocabulary.
    """
    from lapmusic.training.config import TrainConfig
    from lapmusic.training.presets import resolve

    values = {name: getattr(args, name) for name in _TRAINING_OPTIONS if getattr(args, name, None) is not None}
    values.update({k: v for k, v in fields.items() if v is not None})
    config = TrainConfig.from_settings(resolve(getattr(args, "preset", None), values, train_chords))
    try:
        config.validate()
    except LapMusicError as exc:  # the config's field names, said as the options the user typed
        raise LapMusicError(as_options(str(exc), (*_TRAINING_OPTIONS, *fields))) from None
    return config


_OPTION_NAMES = {"lae_path": "--lae-file"}  # fields whose option is not --FIELD-NAME


def as_options(message: str, names) -> str:
    """A config error in the words of the command line: ``nade_skip needs output 'nade'`` becomes
    ``--nade-skip needs --output nade`` (only the field names in ``names``; whole words only)."""
    import re

    for name in sorted(set(names), key=len, reverse=True):
        option = _OPTION_NAMES.get(name, "--" + name.replace("_", "-"))
        message = re.sub(rf"(?<![\w'-]){re.escape(name)}(?![\w-])", option, message)
    return re.sub(r"(--[\w-]+) '([^']*)'", r"\1 \2", message)
