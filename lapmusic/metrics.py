"""Frame-level metrics for next-frame prediction on piano rolls, pooled over a split.

A piece of ``T`` frames gives ``T - 1`` predictions (frames ``2..T``, each from the frames before it).
Every metric pools those predicted frames over all pieces of a split:

- **NLL** (nats per frame): mean over predicted frames of ``-sum_k [y log p + (1 - y) log(1 - p)]``.
- **ACC** (Bay et al. 2009, micro-averaged, in %): ``100 * sum TP / sum (TP + FP + FN)`` over all predicted
  frames and keys, a key predicted on when ``p >= 0.5``.
- **Expected ACC** (in %): the same with soft counts ``TP = sum p y``, ``FP = sum p (1 - y)``,
  ``FN = sum (1 - p) y``.

ACC is ``None`` when ``TP + FP + FN = 0`` (nothing played and nothing predicted: undefined).

For the NADE output (:mod:`lapmusic.nade`) the same NLL formula applies to its conditional logits (exact),
ACC counts the greedy frame (keys decoded low to high at conditional ``p >= 0.5``) and expected ACC uses the
share of sampled frames with each key on (:meth:`MetricAccumulator.update`'s ``on`` and ``probs``).

Trivial baselines on the same frames: **copy-previous-frame ACC** (predict frame ``t`` = frame ``t-1``) and
**marginal NLL** (each key independently on with its frequency in the training frames, smoothed as
``(count + 0.5) / (frames + 1)`` so no probability is 0 or 1).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn


def _as_float64(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    return np.asarray(array, dtype=np.float64)


def nll(probs, targets, eps: float = 1e-12) -> float:
    """Mean over frames of the summed Bernoulli negative log-likelihood (nats per frame).

    ``probs`` and ``targets`` are ``(N, 88)`` (``N`` predicted frames). Probabilities are clipped to
    ``[eps, 1 - eps]``.
    """
    p = np.clip(_as_float64(probs), eps, 1 - eps)
    y = _as_float64(targets)
    if y.shape[0] == 0:
        return float("nan")
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).sum() / y.shape[0])


def _acc(tp: float, fp: float, fn: float) -> float | None:
    denominator = tp + fp + fn
    return None if denominator <= 0 else float(100.0 * tp / denominator)


def accuracy(probs, targets, threshold: float = 0.5) -> float | None:
    """Micro ACC in % of ``(N, 88)`` probabilities thresholded at ``p >= threshold``."""
    pred = _as_float64(probs) >= threshold
    y = _as_float64(targets) > 0.5
    return _acc(float((pred & y).sum()), float((pred & ~y).sum()), float((~pred & y).sum()))


def expected_accuracy(probs, targets) -> float | None:
    """Micro ACC in % with soft counts ``TP = sum p y``, ``FP = sum p (1 - y)``, ``FN = sum (1 - p) y``."""
    p = _as_float64(probs)
    y = _as_float64(targets)
    return _acc(float((p * y).sum()), float((p * (1 - y)).sum()), float(((1 - p) * y).sum()))


class MetricAccumulator:
    """Pools NLL, ACC and expected ACC over batches of logits (sums kept in float64).

    ``update(logits, targets, mask)``: ``logits`` and ``targets`` ``(..., 88)``, ``mask`` ``(...)`` (1 where
    the frame is a real prediction, 0 for padding), any leading shape.

    A NADE output passes its conditional logits (NLL is the same sum of per-key BCEs) plus ``on``, the
    predicted 0/1 frames ACC counts (default ``sigmoid(logits) >= 0.5``), and ``probs``, the per-key
    probabilities of the soft counts (default ``sigmoid(logits)``), both ``(..., 88)``.
    """

    def __init__(self) -> None:
        self.nll_sum = 0.0
        self.frames = 0
        self.tp = self.fp = self.fn = 0.0
        self.soft_tp = self.soft_fp = self.soft_fn = 0.0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
               on: torch.Tensor | None = None, probs: torch.Tensor | None = None) -> None:
        logits = logits.double()
        targets = targets.double()
        if mask is None:
            mask = torch.ones(logits.shape[:-1], dtype=torch.float64, device=logits.device)
        mask = mask.double().unsqueeze(-1)
        per_key = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        self.nll_sum += float((per_key * mask).sum())
        self.frames += int(mask.sum())
        probs = (torch.sigmoid(logits) if probs is None else probs.double()) * mask
        on = ((torch.sigmoid(logits) >= 0.5) if on is None else on > 0.5).double() * mask
        y = targets * mask
        self.tp += float((on * y).sum())
        self.fp += float((on * (1 - y) * mask).sum())
        self.fn += float(((mask - on) * y).sum())
        self.soft_tp += float((probs * y).sum())
        self.soft_fp += float((probs * (1 - y) * mask).sum())
        self.soft_fn += float(((mask - probs) * y).sum())

    def result(self) -> dict:
        return {
            "nll": self.nll_sum / self.frames if self.frames else None,
            "acc": _acc(self.tp, self.fp, self.fn),
            "expected_acc": _acc(self.soft_tp, self.soft_fp, self.soft_fn),
            "frames": self.frames,
        }


# ------------------------------------------------------------------------------------------ baselines
def copy_previous_acc(seqs: Sequence[np.ndarray]) -> float | None:
    """ACC of predicting every frame ``t >= 2`` as a copy of frame ``t - 1``, pooled over ``seqs``."""
    tp = fp = fn = 0.0
    for seq in seqs:
        roll = np.asarray(seq) > 0
        if len(roll) < 2:
            continue
        pred, y = roll[:-1], roll[1:]
        tp += float((pred & y).sum())
        fp += float((pred & ~y).sum())
        fn += float((~pred & y).sum())
    return _acc(tp, fp, fn)


def key_frequencies(train_seqs: Sequence[np.ndarray]) -> np.ndarray:
    """``(88,)`` smoothed frequency of each key over all training frames: ``(count + 0.5) / (frames + 1)``."""
    counts = None
    frames = 0
    for seq in train_seqs:
        roll = np.asarray(seq, dtype=np.float64)
        counts = roll.sum(0) if counts is None else counts + roll.sum(0)
        frames += len(roll)
    if counts is None:
        raise ValueError("no training piece to count key frequencies on")
    return (counts + 0.5) / (frames + 1)


def marginal_nll(train_seqs: Sequence[np.ndarray], seqs: Sequence[np.ndarray]) -> float:
    """NLL (nats per frame) on frames ``2..T`` of ``seqs`` of independent keys at training frequencies."""
    freq = key_frequencies(train_seqs)
    on_cost = -np.log(freq)
    off_cost = -np.log1p(-freq)
    total, frames = 0.0, 0
    for seq in seqs:
        y = np.asarray(seq, dtype=np.float64)[1:]
        if len(y) == 0:
            continue
        total += float((y @ on_cost).sum() + ((1 - y) @ off_cost).sum())
        frames += len(y)
    return total / frames if frames else float("nan")


def baselines(train_seqs: Sequence[np.ndarray], seqs: Sequence[np.ndarray]) -> dict:
    """``{"copy_previous_acc", "marginal_nll"}`` on frames ``2..T`` of ``seqs``."""
    return {"copy_previous_acc": copy_previous_acc(seqs), "marginal_nll": marginal_nll(train_seqs, seqs)}


# Test NLL (nats per frame) reported in the literature, for orientation only: never produced by this code.
# Per dataset, the reference anchor comes first and the best known recurrent model last.
ANCHOR_NLL: dict[str, dict[str, float]] = {
    "jsb": {"TCN (Bai et al. 2018)": 8.10, "best recurrent (RRU)": 7.72},
    "nottingham": {"TCN (Bai et al. 2018)": 3.07, "best recurrent (RRU)": 2.92},
    "musedata": {"LSTM (as reported with RRU)": 7.24, "best recurrent (RRU)": 7.03},
    "pianomidi": {"LSTM (as reported with RRU)": 7.54, "best recurrent (RRU)": 7.38},
}


def best_published_nll(dataset_key: str | None) -> float | None:
    """The lowest anchor test NLL for a benchmark (None for ``bach`` and your own data)."""
    anchors = ANCHOR_NLL.get(dataset_key or "")
    return min(anchors.values()) if anchors else None
