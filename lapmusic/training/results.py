"""Finished runs: load a run folder (:func:`load_run`), evaluate a model on pieces, compare runs over seeds."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lapmusic.core.device import resolve_device
from lapmusic.core.errors import CheckpointError
from lapmusic.model.metrics import nll_with_first_frames
from lapmusic.model.rnn import PianoRollRNN
from lapmusic.training.build import config_from_run, load_model_state, run_split
from lapmusic.training.config import TrainConfig
from lapmusic.training.epoch import _to_tensors, choose_threshold, evaluate_tensors
from lapmusic.training.rundir import load_checkpoint, read_history, read_status


# ------------------------------------------------------------------------------------------ loading
@dataclass
class LoadedRun:
    """A trained run, ready to sample from or evaluate (:func:`load_run`).

    Attributes
    ----------
    model : PianoRollRNN
        In eval mode on ``device``.
    config : TrainConfig
        The run's settings.
    device : torch.device
        Where the model is.
    history : list of dict
        The metrics lines (``metrics.jsonl``), one per epoch.
    final : dict or None
        ``final.json`` (``None`` until the run finished).
    status : dict
        ``status.json``.
    run_dir : Path
        The folder.
    lae : LinearAutoencoder or None
        The run's LAE (``init="lae"``).
    checkpoint : {"best", "last"}
        Which file the weights came from.
    epoch : int
        The epoch those weights are from.
    """

    model: PianoRollRNN
    config: TrainConfig
    device: torch.device
    history: list[dict]
    final: dict | None
    status: dict
    run_dir: Path
    lae: Any = None
    checkpoint: str = "best"
    epoch: int = 0


def load_run(run_dir, device=None) -> LoadedRun:
    """Load a run folder to sample from or evaluate.

    Parameters
    ----------
    run_dir : str or Path
        A folder written by :func:`lapmusic.training.train.train` (finished, or with a checkpoint).
    device : str or torch.device, optional
        Where the model goes (default: the run's ``device`` setting, ``auto`` choosing CUDA when there is one).

    Returns
    -------
    LoadedRun
        The best model (``best.pt``, else the last ``checkpoint.pt``) in eval mode, the config, the metrics
        history, ``final.json`` (``None`` before the run finished), status and the LAE (``None`` when absent or
        unreadable).

    Raises
    ------
    CheckpointError
        When the folder, its config or its checkpoint is missing, corrupt or foreign.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder {run_dir} does not exist")
    config = config_from_run(run_dir)
    device = resolve_device(device if device is not None else config.device)
    path = run_dir / "best.pt"
    which = "best"
    if not path.exists():
        path, which = run_dir / "checkpoint.pt", "last"
    payload = load_checkpoint(path, device)
    model = PianoRollRNN.from_config(config.model)
    load_model_state(model, payload.get("model", {}), path)
    model.to(device).eval()
    final = None
    final_path = run_dir / "final.json"
    if final_path.exists():
        try:
            final = json.loads(final_path.read_text())
        except (OSError, json.JSONDecodeError):
            final = None
    lae = None
    if (run_dir / "lae.npz").exists():
        try:
            from lapmusic.lae.autoencoder import LinearAutoencoder

            lae = LinearAutoencoder.load(run_dir / "lae.npz")
        except Exception:  # the LAE is informative only; a broken one must not block sampling
            lae = None
    return LoadedRun(model=model, config=config, device=device, history=read_history(run_dir), final=final,
                     status=read_status(run_dir), run_dir=run_dir, lae=lae, checkpoint=which,
                     epoch=int(payload.get("epoch", 0)))


def evaluate(model_or_run, seqs: Sequence[np.ndarray], device=None, batch_size: int = 64,
             threshold: float | None = None) -> dict:
    """NLL, ACC and expected ACC of a model on pieces, pooled over their predicted frames (frames ``2..T``).

    Parameters
    ----------
    model_or_run : PianoRollRNN or LoadedRun
        The network (a run's ``model``).
    seqs : sequence of array of shape (T, 88)
        The pieces (pieces under two frames predict nothing).
    device : str or torch.device, optional
        Where to evaluate (default: the run's device, or the model's).
    batch_size : int
        Pieces per batch (memory only: the result does not depend on it).
    threshold : float, optional
        Also report ACC with keys on at ``p >= threshold`` (:func:`validation_threshold`).

    Returns
    -------
    dict
        ``"nll"`` (nats per frame), ``"acc"`` and ``"expected_acc"`` (in %; :mod:`lapmusic.model.metrics`, the
        NADE's greedy frame and sampled frames for a NADE head), ``"frames"``; ``"nll_first_frame_scored"``,
        the NLL per frame with each piece's first frame scored too (:func:`first_frame_nll`,
        :func:`lapmusic.model.metrics.nll_with_first_frames`), over ``"frames_first_frame_scored"`` frames; with
        ``threshold`` also ``"threshold"`` and ``"acc_tuned"``.
    """
    model = model_or_run.model if isinstance(model_or_run, LoadedRun) else model_or_run
    if device is None:
        device = model_or_run.device if isinstance(model_or_run, LoadedRun) else next(model.parameters()).device
    device = resolve_device(device)
    model.to(device)
    pieces = _to_tensors(seqs, device)
    result = evaluate_tensors(model, pieces, batch_size, threshold=threshold)
    first_sum, first_frames = first_frame_nll(model, pieces, batch_size)
    result["nll_first_frame_scored"] = nll_with_first_frames(result["nll"], result["frames"], first_sum,
                                                             first_frames)
    result["frames_first_frame_scored"] = result["frames"] + first_frames
    return result


@torch.no_grad()
def first_frame_nll(model: PianoRollRNN, pieces: Sequence[torch.Tensor], batch_size: int = 64) -> tuple[float, int]:
    """The summed NLL of every piece's first frame, each predicted from one silent frame read from the zero state.

    That is the distribution :func:`lapmusic.sampling.sample.generate` draws a first frame from without a primer;
    the copy window's only candidate is that silent frame.

    Parameters
    ----------
    model : PianoRollRNN
        The network.
    pieces : sequence of Tensor of shape (T, 88)
        0/1 pieces on the model's device (pieces of no frame are skipped).
    batch_size : int
        Pieces per batch (memory only).

    Returns
    -------
    total : float
        ``-sum log p(first frame | silence read)`` in nats.
    count : int
        How many first frames were scored.
    """
    was_training = model.training
    model.eval()
    firsts = [piece[0] for piece in pieces if len(piece) >= 1]
    dtype = next(model.parameters()).dtype
    total = 0.0
    for start in range(0, len(firsts), batch_size):
        frames = torch.stack(firsts[start : start + batch_size]).to(dtype).unsqueeze(1)  # (B, 1, 88)
        silence = torch.zeros_like(frames)
        states, _ = model.hidden_states(silence)
        total += float(-model.head.log_prob(states, frames, silence, None).double().sum())
    model.train(was_training)
    return total, len(firsts)


def validation_threshold(run: LoadedRun, valid_seqs: Sequence[np.ndarray] | None = None) -> float | None:
    """The decision threshold of highest validation ACC, on a 0.005 grid.

    Parameters
    ----------
    run : LoadedRun
        A loaded run.
    valid_seqs : sequence of array of shape (T, 88), optional
        Its validation pieces (default: loaded from the run's dataset).

    Returns
    -------
    float or None
        ``final.json``'s ``threshold``, else the one chosen now on ``valid_seqs``; ``None`` when ACC is
        undefined there.
    """
    if run.final and run.final.get("threshold") is not None:
        return float(run.final["threshold"])
    if valid_seqs is None:
        valid_seqs = run_split(run.config, "valid")
    return choose_threshold(run.model, _to_tensors(valid_seqs, run.device))


# ------------------------------------------------------------------------------------------ comparing runs
def _mean_std(values: Sequence[float | None]) -> dict:
    clean = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not clean:
        return {"mean": None, "std": None, "n": 0}
    array = np.asarray(clean)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
            "n": len(clean)}


def epochs_to_reach(history: Sequence[dict], target: float) -> int | None:
    """The first epoch whose validation NLL is at or below ``target`` (``None`` if never)."""
    for line in history:
        if line.get("valid_nll") is not None and line["valid_nll"] <= target:
            return int(line["epoch"])
    return None


def compare_runs(run_dirs: Sequence) -> dict:
    """The LAE init against the random init over seeds: mean and std of finished runs, and curves by epoch.

    Parameters
    ----------
    run_dirs : sequence of str or Path
        Run folders; those without ``final.json`` are skipped.

    Returns
    -------
    dict
        - ``"inits"``: per init, ``"nll"``, ``"acc"``, ``"expected_acc"``, ``"best_epoch"``, ``"epochs"``,
          ``"seconds"``, ``"pretrain_seconds"``, ``"best_valid_nll"``, each ``{"mean", "std", "n"}``
          (sample std, ``ddof=1``);
        - ``"valid_curve"``: per init, the mean validation NLL at each epoch;
        - ``"best_so_far_curve"``: per init, the mean over seeds of the best validation NLL reached by each
          epoch (a run that stopped early keeps its best model);
        - ``"lae_better_at_equal_epochs"``: the LAE curve is below the random one at every epoch (``None``
          without both inits);
        - ``"epochs_to_reach_random_best"``: runs paired by seed, the first epoch at which the LAE run's
          validation NLL is at or below the random run's best (``"per_seed"``, ``"mean"``, ``"reached"``);
        - ``"runs"``: how many finished runs were read.

    Raises
    ------
    CheckpointError
        When a finished run's ``config.json`` is unreadable.
    """
    runs = []
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        final_path = run_dir / "final.json"
        if not final_path.exists():
            continue
        config = config_from_run(run_dir)
        runs.append((config, json.loads(final_path.read_text()), read_history(run_dir)))
    inits: dict[str, dict] = {}
    curves: dict[str, list] = {}
    for init in ("lae", "random"):
        group = [r for r in runs if r[0].init == init]
        if not group:
            continue
        inits[init] = {key: _mean_std([final.get(key) for _, final, _ in group])
                       for key in ("nll", "acc", "expected_acc", "best_epoch", "epochs", "seconds",
                                   "pretrain_seconds", "best_valid_nll")}
        longest = max(len(history) for _, _, history in group)
        curve = []
        for epoch in range(longest):
            values = [h[epoch]["valid_nll"] for _, _, h in group if len(h) > epoch]
            curve.append(float(np.mean(values)) if values else None)
        curves[init] = curve
    reach = []
    by_seed_random = {c.seed: (f, h) for c, f, h in runs if c.init == "random"}
    for config, final, history in runs:
        if config.init == "lae" and config.seed in by_seed_random:
            random_best = by_seed_random[config.seed][0].get("best_valid_nll")
            reach.append({"seed": config.seed,
                          "epoch": epochs_to_reach(history, random_best) if random_best is not None else None})
    reached = [r["epoch"] for r in reach if r["epoch"] is not None]
    # The model one keeps after e epochs is the best so far, and a run that stopped early keeps it: compare
    # inits on the mean over seeds of the best validation NLL reached by epoch e, up to the longest run.
    longest = max((len(h) for _, _, h in runs), default=0)
    best_so_far: dict[str, list] = {}
    for init in curves:
        per_run = []
        for config, _, history in runs:
            if config.init != init or not history:
                continue
            values = np.minimum.accumulate([h["valid_nll"] for h in history])
            per_run.append(np.concatenate([values, np.full(longest - len(values), values[-1])]))
        best_so_far[init] = np.mean(per_run, axis=0).tolist()
    better = None
    if "lae" in best_so_far and "random" in best_so_far:
        better = all(lae < rnd for lae, rnd in zip(best_so_far["lae"], best_so_far["random"]))
    return {
        "inits": inits,
        "valid_curve": curves,
        "epochs_to_reach_random_best": {"per_seed": reach, "mean": float(np.mean(reached)) if reached else None,
                                        "reached": f"{len(reached)}/{len(reach)}"},
        "best_so_far_curve": best_so_far,
        "lae_better_at_equal_epochs": better,
        "runs": len(runs),
    }
