"""Pre-training of a run's network: the LAE initialisation (fit or reuse the LAE, choose alpha, copy ``A`` and
``B`` into the recurrent layer, fit the readout on the network's own states) or the random init's options.

:func:`lapmusic.training.train.train` calls :func:`initialise` once, before epoch 0. The maths of each step is
in :mod:`lapmusic.model.lae_init` (``init_from_lae``, ``fit_readout``) and :mod:`lapmusic.lae.fit`; the recipe
and its measurements in docs/models.md.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from lapmusic import N_KEYS
from lapmusic.core.alloc import keep_freed_memory
from lapmusic.core.errors import LapMusicError
from lapmusic.data.fingerprint import pieces_fingerprint
from lapmusic.model.chordvocab import ChordVocabNADE
from lapmusic.model.lae_init import (
    choose_alpha,
    collect_states,
    constant_readout,
    fit_chord_logits,
    fit_readout,
    init_from_lae,
    scale_recurrent,
)
from lapmusic.model.rnn import PianoRollRNN
from lapmusic.training.config import TrainConfig
from lapmusic.training.epoch import TrainingCancelled


def initialise(model: PianoRollRNN, config: TrainConfig, train_seqs, run_dir: Path, device, report,
                cancel=None) -> dict:
    """Random init (PyTorch's defaults, already done) or the LAE init: fit the LAE, set alpha, fit the readout.

    ``rec_radius`` (both inits) then scales ``W_rec`` to that exact spectral radius; ``readout_start`` picks
    the LAE init's readout: the fit on the network's states, the constant key-frequency model, or zeros.
    """
    if config.init == "random":
        if config.rec_radius is None:
            return {"seconds": 0.0}
        return {"seconds": 0.0, "rec_radius_before": scale_recurrent(model, config.rec_radius)}
    started = time.perf_counter()
    keep_freed_memory()  # the gram LAE's and the readout fit's chunk-sized blocks are freed and taken again
    if config.lae_path:
        lae = _load_lae(config, train_seqs)
        report(0.6, f"pre-training: reusing the LAE in {config.lae_path}")
    else:
        report(0.0, f"pre-training: fitting the LAE (p={config.model.hidden}, {config.lae_solver} solver)")
        try:
            lae = _fit_lae(train_seqs, config.model.hidden, solver=config.lae_solver, max_lag=lae_lags(config),
                           decay=config.lae_decay, device=str(device), seed=config.seed, cancel=cancel,
                           progress=lambda f, m: report(0.6 * f, f"LAE: {m}"))
        except LapMusicError:
            if cancel is not None and cancel.is_set():
                raise TrainingCancelled("cancelled") from None
            raise
    lae.save(run_dir / "lae.npz")
    lae_seconds = time.perf_counter() - started
    alpha = config.alpha if config.alpha is not None else choose_alpha(lae, train_seqs, target=config.alpha_target)
    init_from_lae(model, lae, alpha, max_spectral_radius=config.lae_max_radius)
    extra = {}
    if config.rec_radius is not None:
        extra["rec_radius_before"] = scale_recurrent(model, config.rec_radius)
    report(0.65, f"pre-training: {config.readout_start} readout (alpha={alpha:.4g})")
    readout_started = time.perf_counter()
    model.to(device)
    # The readout skip's W_skip is fitted jointly with the readout: features [h_t, x_t], same ridge.
    joint = config.readout_start == "fit" and config.model.readout_skip and config.readout_skip_fit
    collected = collect_states(model, train_seqs, device, max_frames=config.readout_max_frames, seed=config.seed,
                               with_inputs=joint)  # (H, Y), or (H, Y, X) for the joint fit
    H, Y = collected[0], collected[1]
    skip = None
    if config.readout_start == "fit":
        features = torch.cat([H, collected[2]], dim=1) if joint else H
        W, c = fit_readout(features, Y, logistic_steps=config.readout_steps, ridge=config.readout_ridge,
                           progress=lambda f, m: report(0.65 + 0.35 * f, m))
        if joint:
            W, skip = W[:, : config.model.hidden], W[:, config.model.hidden :]
    elif config.readout_start == "constant":
        W, c = constant_readout(Y, config.model.hidden)
    else:
        W, c = torch.zeros(N_KEYS, config.model.hidden), torch.zeros(N_KEYS)
    model.head.set_readout(W, c, skip)
    if config.vocab_fit_steps and isinstance(model.head, ChordVocabNADE):
        chord = model.head.vocab_index(Y)  # the next frame's row of the vocabulary, -1 when not in it
        known = chord >= 0
        report(0.99, f"pre-training: chord logits on {int(known.sum())} states")
        model.head.set_chord_logits(*fit_chord_logits(H[known], chord[known], model.head.chord_logits.bias.detach(),
                                                      steps=config.vocab_fit_steps, ridge=config.readout_ridge))
    model.cpu()
    return {"seconds": time.perf_counter() - started, "lae_seconds": lae_seconds,
            "lae_fit_seconds": float(lae.seconds), "lae_reused": bool(config.lae_path),
            "lae_energy_captured": _energy(lae),
            "readout_seconds": time.perf_counter() - readout_started, "alpha": alpha,
            "readout_frames": int(len(H)), **extra}


def lae_lags(config: TrainConfig) -> int | None:
    """The LAE's max lag for ``config``: :func:`lapmusic.lae.fit.weighted_max_lag` of its ``lae_decay`` and
    ``lae_max_lag``."""
    from lapmusic.lae.fit import weighted_max_lag  # late, like _fit_lae

    return weighted_max_lag(config.lae_decay, config.lae_max_lag)


def _energy(lae) -> float | None:
    try:
        return float(lae.energy_captured)
    except (AttributeError, TypeError, ValueError):
        return None


def _load_lae(config: TrainConfig, train_seqs):
    """The LAE of ``--lae-file``, refused unless it is the one this run would fit: as many units, the same lag
    weighting and lags, fitted on the same training pieces (config.json then says truly how it was made)."""
    from lapmusic.lae.autoencoder import LinearAutoencoder
    from lapmusic.lae.xi import resolve_max_lag

    path, hidden = config.lae_path, config.model.hidden
    lae = LinearAutoencoder.load(path)  # a missing or foreign file is a CheckpointError that says what to do
    if lae.A.shape[0] != hidden:
        raise LapMusicError(f"the LAE in {path} has p={lae.A.shape[0]} units but the network has hidden={hidden}; "
                            "they must be equal")
    decay = 1.0 if config.lae_decay is None else float(config.lae_decay)
    lags = resolve_max_lag(train_seqs, lae_lags(config))
    differences = []
    if not math.isclose(lae.decay, decay, rel_tol=1e-9):
        differences.append(f"lag weighting {lae.decay:g} (this run: --lae-decay {decay:g})")
    if lae.max_lag != lags:
        differences.append(f"{lae.max_lag} lags (this run: {lags}, from --lae-max-lag and --lae-decay)")
    frames = sum(len(s) for s in train_seqs)
    if lae.data_sha256 and lae.data_sha256 != pieces_fingerprint(train_seqs)["sha256"]:
        differences.append(f"other training pieces ({lae.rows:,} frames; this run's {config.dataset} training "
                           f"split: {len(train_seqs)} pieces, {frames:,} frames)")
    elif not lae.data_sha256 and lae.rows != frames:  # a file written before LAEs recorded their data
        differences.append(f"{lae.rows:,} frames of data (this run's {config.dataset} training split has {frames:,})")
    if differences:
        raise LapMusicError(
            f"the LAE in {path} was fitted with other settings than this run's: {'; '.join(differences)}. "
            "Give this run the LAE's settings (e.g. --lae-decay 1 for `lapmusic lae`'s unweighted LAE, the same "
            "--dataset and --max-sequences), or leave out --lae-file to fit the LAE in the run")
    return lae


def _fit_lae(seqs, p, **options):
    from lapmusic.lae.fit import (
        fit_lae,  # imported late: lae.py pulls in its solvers only when pre-training is asked for
    )

    return fit_lae(seqs, p, **options)
