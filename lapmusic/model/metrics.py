"""Frame-level metrics for next-frame prediction on piano rolls, pooled over a split.

A piece of ``T`` frames gives ``T - 1`` predictions (frames ``2..T``, each from the frames before it).
Every metric pools those predicted frames over all pieces of a split:

- **NLL** (nats per frame): mean over predicted frames of ``-sum_k [y log p + (1 - y) log(1 - p)]``.
- **ACC** (Bay et al. 2009, micro-averaged, in %): ``100 * sum TP / sum (TP + FP + FN)`` over all predicted
  frames and keys, a key predicted on when ``p >= 0.5``.
- **Expected ACC** (in %): the same with soft counts ``TP = sum p y``, ``FP = sum p (1 - y)``,
  ``FN = sum (1 - p) y``.

ACC is ``None`` when ``TP + FP + FN = 0`` (nothing played and nothing predicted: undefined).

**ACC at a tuned threshold**: the networks rarely give a key ``p >= 0.5``, so ACC at 0.5 understates what
they predict. :class:`MetricAccumulator` also keeps, per ``1 / THRESHOLD_BINS`` bin of ``p``, how many
played and silent keys fell there; ACC at any threshold ``j / THRESHOLD_BINS`` follows from the cumulative
counts (:meth:`MetricAccumulator.acc_at`), and :meth:`MetricAccumulator.best_threshold` picks the one that
maximises ACC. It is chosen on the validation split and applied to the test split.

For the NADE output (:mod:`lapmusic.model.nade`) the same NLL formula applies to its conditional logits (exact),
ACC counts the greedy frame (keys decoded low to high at conditional ``p >= 0.5``) and expected ACC uses the
share of sampled frames with each key on (:meth:`MetricAccumulator.update`'s ``on`` and ``probs``).

**Two NLL conventions.** ``nll`` leaves out each piece's first frame (frames ``2..T`` are predicted, as in
the TCN code of Bai et al. 2018). Boulanger-Lewandowski et al. 2012 average over every time step, the first
included. :func:`nll_with_first_frames` pools both: the NLL of frames ``2..T`` and that of each piece's first
frame, predicted from the state after one silent frame read from the zero state (the distribution the sampler
draws a first frame from without a primer); the product of those conditionals is a distribution over whole
pieces, so the pooled figure is an exact NLL per frame too.

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
    """Mean over frames of the summed Bernoulli negative log-likelihood, in nats per frame.

    ``NLL = -(1 / N) sum_n sum_k [y_nk log p_nk + (1 - y_nk) log(1 - p_nk)]``

    Parameters
    ----------
    probs : array-like of shape (N, 88)
        Predicted key probabilities of ``N`` frames (numpy or torch), clipped to ``[eps, 1 - eps]``.
    targets : array-like of shape (N, 88)
        The 0/1 frames.
    eps : float
        The clipping, so that a certain mistake costs ``-log(eps)`` instead of infinity.

    Returns
    -------
    float
        NaN when there is no frame.
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
    """Micro-averaged ACC (Bay et al. 2009) in %: ``100 TP / (TP + FP + FN)``, summed over frames and keys.

    Parameters
    ----------
    probs : array-like of shape (N, 88)
        Predicted key probabilities; a key is predicted on when ``p >= threshold``.
    targets : array-like of shape (N, 88)
        The 0/1 frames (nonzero = on).
    threshold : float
        The decision threshold.

    Returns
    -------
    float or None
        ``None`` when ``TP + FP + FN = 0`` (nothing played, nothing predicted).
    """
    pred = _as_float64(probs) >= threshold
    y = _as_float64(targets) > 0.5
    return _acc(float((pred & y).sum()), float((pred & ~y).sum()), float((~pred & y).sum()))


def expected_accuracy(probs, targets) -> float | None:
    """ACC in % with soft counts: ``TP = sum p y``, ``FP = sum p (1 - y)``, ``FN = sum (1 - p) y``.

    Parameters
    ----------
    probs : array-like of shape (N, 88)
        Predicted key probabilities.
    targets : array-like of shape (N, 88)
        The 0/1 frames.

    Returns
    -------
    float or None
        The expected counts' ACC (no threshold to choose); ``None`` when ``TP + FP + FN = 0``.
    """
    p = _as_float64(probs)
    y = _as_float64(targets)
    return _acc(float((p * y).sum()), float((p * (1 - y)).sum()), float(((1 - p) * y).sum()))


THRESHOLD_BINS = 200  # thresholds j / 200, j = 1..199: a 0.005 grid


def acc_curve(positive_hist: np.ndarray, negative_hist: np.ndarray) -> np.ndarray:
    """``(bins,)`` ACC in % at thresholds ``j / bins`` (``j = 0..bins-1``) from per-bin counts of ``p``.

    ``positive_hist[b]`` / ``negative_hist[b]``: played / silent keys with ``floor(p * bins) = b`` (``p = 1``
    in the last bin). A key is on at threshold ``j / bins`` iff its bin is ``>= j``, so ``TP(j)`` is the sum of
    ``positive_hist[j:]``, ``FP(j)`` that of ``negative_hist[j:]`` and ``FN(j) = positives - TP(j)``.
    NaN where ``TP + FP + FN = 0``.
    """
    tp = np.cumsum(positive_hist[::-1])[::-1].astype(np.float64)
    fp = np.cumsum(negative_hist[::-1])[::-1].astype(np.float64)
    fn = float(positive_hist.sum()) - tp
    denominator = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 100.0 * tp / np.where(denominator > 0, denominator, 1), np.nan)


def best_threshold(positive_hist: np.ndarray, negative_hist: np.ndarray) -> float | None:
    """The threshold ``j / bins`` (``1 <= j < bins``) of highest ACC; ties: the middle of the first run of
    maxima (a plateau of equal ACC means no data between those thresholds). ``None`` when ACC is undefined."""
    curve = acc_curve(positive_hist, negative_hist)[1:]
    if not np.isfinite(curve).any():
        return None
    curve = np.where(np.isfinite(curve), curve, -1.0)
    best = curve.max()
    first = int(np.argmax(curve >= best - 1e-12))
    last = first
    while last + 1 < len(curve) and curve[last + 1] >= best - 1e-12:
        last += 1
    return float((1 + (first + last) // 2) / len(positive_hist))


class MetricAccumulator:
    """Pools NLL, ACC and expected ACC over batches of logits (sums kept in float64).

    ``update(logits, targets, mask)``: ``logits`` and ``targets`` ``(..., 88)``, ``mask`` ``(...)`` (1 where
    the frame is a real prediction, 0 for padding), any leading shape.

    A NADE output passes its conditional logits (NLL is the same sum of per-key BCEs) plus ``on``, the
    predicted 0/1 frames ACC counts (default ``sigmoid(logits) >= 0.5``), and ``probs``, the per-key
    probabilities of the soft counts (default ``sigmoid(logits)``), both ``(..., 88)``. An output whose NLL
    is not a sum of per-key BCEs (the chord-vocabulary mixture, :mod:`lapmusic.model.chordvocab`) passes ``nll``,
    the exact NLL of each frame ``(...)``, with ``on`` and ``probs``, and ``logits=None``.
    """

    def __init__(self) -> None:
        self.nll_sum = 0.0
        self.frames = 0
        self.nll_only_frames = 0  # frames pooled by update_nll, which count no ACC
        self.tp = self.fp = self.fn = 0.0
        self.soft_tp = self.soft_fp = self.soft_fn = 0.0
        self.positive_hist = np.zeros(THRESHOLD_BINS, dtype=np.int64)
        self.negative_hist = np.zeros(THRESHOLD_BINS, dtype=np.int64)

    @torch.no_grad()
    def update(self, logits: torch.Tensor | None, targets: torch.Tensor, mask: torch.Tensor | None = None,
               on: torch.Tensor | None = None, probs: torch.Tensor | None = None,
               nll: torch.Tensor | None = None) -> None:
        targets = targets.double()
        if mask is None:
            mask = torch.ones(targets.shape[:-1], dtype=torch.float64, device=targets.device)
        mask = mask.double().unsqueeze(-1)
        if nll is None:
            logits = logits.double()
            per_key = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
            self.nll_sum += float((per_key * mask).sum())
        else:  # per-frame NLLs (...,) given directly (the chord-vocabulary mixture); logits may be None
            self.nll_sum += float((nll.double() * mask.squeeze(-1)).sum())
        self.frames += int(mask.sum())
        probs = (torch.sigmoid(logits) if probs is None else probs.double()) * mask
        on = ((logits >= 0) if on is None else on > 0.5).double() * mask  # sigmoid(l) >= 0.5 <=> l >= 0
        y = targets * mask
        self.tp += float((on * y).sum())
        self.fp += float((on * (1 - y) * mask).sum())
        self.fn += float(((mask - on) * y).sum())
        self.soft_tp += float((probs * y).sum())
        self.soft_fp += float((probs * (1 - y) * mask).sum())
        self.soft_fn += float(((mask - probs) * y).sum())
        bins = (probs * THRESHOLD_BINS).long().clamp_(0, THRESHOLD_BINS - 1)
        real = (mask.expand_as(probs) > 0)
        played = real & (targets > 0.5)
        self.positive_hist += torch.bincount(bins[played], minlength=THRESHOLD_BINS).cpu().numpy()
        self.negative_hist += torch.bincount(bins[real & ~played], minlength=THRESHOLD_BINS).cpu().numpy()

    @torch.no_grad()
    def update_nll(self, nll: torch.Tensor, mask: torch.Tensor) -> None:
        """Pool the NLL alone: per-frame NLLs ``nll`` ``(...)`` where ``mask`` ``(...)`` is 1; ACC counts stay
        untouched, and :meth:`result` gives ACC and expected ACC as ``None`` (they would cover only part of the frames)."""
        mask = mask.double()
        self.nll_sum += float((nll.double() * mask).sum())
        self.frames += int(mask.sum())
        self.nll_only_frames += int(mask.sum())

    def acc_at(self, threshold: float) -> float | None:
        """ACC in % with keys on when ``p >= threshold`` (``threshold`` rounded down to the 1/200 grid)."""
        j = int(np.clip(np.floor(threshold * THRESHOLD_BINS + 1e-9), 0, THRESHOLD_BINS - 1))
        value = acc_curve(self.positive_hist, self.negative_hist)[j]
        return None if not np.isfinite(value) else float(value)

    def best_threshold(self) -> float | None:
        """The threshold of highest ACC on the data seen (see :func:`best_threshold`)."""
        return best_threshold(self.positive_hist, self.negative_hist)

    def result(self) -> dict:
        return {
            "nll": self.nll_sum / self.frames if self.frames else None,
            "acc": _acc(self.tp, self.fp, self.fn) if not self.nll_only_frames else None,
            "expected_acc": _acc(self.soft_tp, self.soft_fp, self.soft_fn) if not self.nll_only_frames else None,
            "frames": self.frames,
        }


def nll_with_first_frames(nll_predicted: float | None, frames_predicted: int, first_nll_sum: float,
                          first_frames: int) -> float | None:
    """NLL per frame with every piece's first frame scored too (the convention of Boulanger-Lewandowski et al. 2012).

    ``(nll_predicted * frames_predicted + first_nll_sum) / (frames_predicted + first_frames)``.

    Parameters
    ----------
    nll_predicted : float or None
        The NLL per frame over frames ``2..T`` of every piece (``None`` when there is none).
    frames_predicted : int
        How many such frames.
    first_nll_sum : float
        The summed NLL (nats) of the pieces' first frames.
    first_frames : int
        How many first frames (one per piece of at least one frame).

    Returns
    -------
    float or None
        ``None`` when there is no frame at all.
    """
    frames = frames_predicted + first_frames
    if frames == 0:
        return None
    total = (nll_predicted * frames_predicted if frames_predicted else 0.0) + first_nll_sum
    return float(total / frames)


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
    """Two trivial predictors on frames ``2..T`` of ``seqs``, the floor any model should beat.

    Parameters
    ----------
    train_seqs : sequence of array of shape (T, 88)
        The training pieces (the key frequencies of :func:`marginal_nll`).
    seqs : sequence of array of shape (T, 88)
        The pieces scored.

    Returns
    -------
    dict
        ``"copy_previous_acc"``: ACC of predicting each frame as a copy of the one before
        (:func:`copy_previous_acc`); ``"marginal_nll"``: NLL of independent keys at their smoothed training
        frequencies (:func:`marginal_nll`).
    """
    return {"copy_previous_acc": copy_previous_acc(seqs), "marginal_nll": marginal_nll(train_seqs, seqs)}


# Test NLL (nats per frame) reported in the literature, for orientation only: never produced by this code.
# Per dataset, the reference anchor comes first and the best known recurrent model last. The RRU and LSTM figures
# were checked in the RRU authors' repository, the TCN ones were not (docs/research/literature.md).
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
