"""The optimizer and learning-rate schedule of a training run."""

from __future__ import annotations

import math

import torch

from lapmusic.model.rnn import PianoRollRNN
from lapmusic.training.config import TrainConfig


def parameter_groups(model: PianoRollRNN, config: TrainConfig) -> list[dict]:
    """One group per parameter tensor; with ``relative_lr`` each weight matrix's learning rate is scaled by
    its RMS at the start of training over the RMS of PyTorch's default init (``1 / sqrt(3 * hidden)``).

    Why: Adam moves every parameter by about ``lr`` per step whatever its scale, so it would soon rewrite the
    LAE init's small ``W_in = alpha * A``; this gives every matrix the same *relative* step. Biases keep ``lr``.
    """
    reference = 1.0 / math.sqrt(3.0 * config.model.hidden)
    groups = []
    for name, parameter in model.named_parameters():
        factor = 1.0
        if config.relative_lr and parameter.dim() > 1:
            rms = float(parameter.detach().pow(2).mean().sqrt())
            # A zero-initialised matrix (the readout skip) has no scale of its own: it keeps lr.
            factor = max(rms / reference, 1e-3) if math.isfinite(rms) and rms > 0 else 1.0
        groups.append({"params": [parameter], "lr": config.lr * factor, "name": name, "lr_factor": factor})
    return groups


def make_optimizer(model: PianoRollRNN, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam, or SGD with momentum, over :func:`parameter_groups`, with ``config``'s weight decay."""
    groups = parameter_groups(model, config)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    """Multiply every group's rate by ``lr_factor`` after ``lr_patience`` epochs without a better validation NLL,
    down to ``min_lr`` (scaled like the group)."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience,
        min_lr=[config.min_lr * group["lr_factor"] for group in optimizer.param_groups])


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The run's learning rate now (the first group's, without its ``relative_lr`` factor)."""
    return optimizer.param_groups[0]["lr"] / optimizer.param_groups[0].get("lr_factor", 1.0)
