"""One training epoch and the evaluation passes: length-bucketed batches, truncated BPTT, NLL/ACC totals.

Batching: pieces are bucketed by length (sorted, random tie-breaks, then cut into batches whose order is
shuffled each epoch), padded to the longest piece of the batch and masked. Each batch is cut into windows
of ``bptt`` frames; the recurrent state is carried across windows (detached), one optimizer step per window.

``train.py`` runs the epochs and keeps the run folder.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from lapmusic import N_KEYS
from lapmusic.core.alloc import keep_freed_memory
from lapmusic.core.errors import LapMusicError
from lapmusic.model.metrics import MetricAccumulator
from lapmusic.model.nade import EXPECTED_ACC_SAMPLES
from lapmusic.model.rnn import PianoRollRNN


class TrainingDiverged(LapMusicError):
    """The loss became NaN or infinite; the run folder keeps its last good checkpoint."""


class TrainingCancelled(LapMusicError):
    """Raised internally when the cancel flag is set (``train`` returns instead of raising it)."""


# A validation NLL above this after a training epoch means the run diverged (see check_divergence).
DIVERGED_NLL = 2 * N_KEYS * math.log(2.0)


def check_divergence(epoch: int, train_nll, valid_nll) -> None:
    """Stop a run whose loss is NaN/inf or absurd: a validation NLL above ``DIVERGED_NLL`` after a training
    epoch is twice the NLL of predicting 0.5 for every key (``88 ln 2 = 61`` nats per frame), which any
    network that learned anything beats; it comes from a learning rate far too high (e.g. ``--lr 1e6``)."""
    if valid_nll is None or not math.isfinite(valid_nll) or train_nll is None or not math.isfinite(train_nll):
        raise TrainingDiverged(
            f"epoch {epoch} gave a NaN/inf NLL; the run keeps its last good checkpoint (epoch {epoch - 1}). "
            "Try a lower --lr")
    if valid_nll > DIVERGED_NLL:
        raise TrainingDiverged(
            f"epoch {epoch} diverged: validation NLL {valid_nll:.4g} is far above {DIVERGED_NLL:.0f}, twice the NLL "
            f"of predicting 0.5 for every key; the run keeps its last good checkpoint (epoch {epoch - 1}). "
            "Try a lower --lr")


# ------------------------------------------------------------------------------------------ batching
def _to_tensors(seqs: Sequence[np.ndarray], device: torch.device) -> list[torch.Tensor]:
    tensors = []
    for index, seq in enumerate(seqs):
        array = np.asarray(seq)
        if array.ndim != 2 or array.shape[1] != N_KEYS:
            raise LapMusicError(f"piece {index} has shape {array.shape}; every piece must be (T, {N_KEYS})")
        tensors.append(torch.as_tensor((array > 0).astype(np.uint8), device=device))
    return tensors


def length_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Indices grouped into batches of similar length (bucketing); shuffled when ``rng`` is given."""
    lengths = np.asarray(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    order = np.lexsort((rng.random(len(lengths)), lengths))  # by length, random among equal lengths
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def pad_batch(pieces: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs ``(B, L-1, 88)`` (frames ``1..T-1``), targets ``(B, L-1, 88)`` (frames ``2..T``), mask ``(B, L-1)``.

    Rows are ordered longest piece first, so the pieces still running at any frame are a prefix of the rows
    (windows past the end of the short pieces run on fewer rows: see :func:`_active_rows`).
    """
    pieces = sorted(pieces, key=len, reverse=True)
    longest = len(pieces[0])
    device = pieces[0].device
    rolls = torch.zeros(len(pieces), longest, N_KEYS, dtype=torch.float32, device=device)
    mask = torch.zeros(len(pieces), max(longest - 1, 0), dtype=torch.float32, device=device)
    for row, piece in enumerate(pieces):
        rolls[row, : len(piece)] = piece
        mask[row, : max(len(piece) - 1, 0)] = 1.0
    return rolls[:, :-1], rolls[:, 1:], mask


# ------------------------------------------------------------------------------------------ input noise
def key_density(pieces: Sequence[torch.Tensor]) -> torch.Tensor:
    """``rho`` ``(88,)``: the share of frames in which each key is on, over every frame of ``pieces``."""
    counts = sum(piece.sum(0, dtype=torch.float64) for piece in pieces)
    frames = sum(len(piece) for piece in pieces)
    return (counts / max(frames, 1)).to(torch.float32)


def noise_generator(rate: float, seed: int, epoch: int, device: torch.device) -> torch.Generator | None:
    """The input-noise draws of one epoch, seeded from ``(seed, epoch)`` like the batch order, so a resumed
    run draws the same noise as an uninterrupted one; a stream of its own (not the global torch RNG), so
    dropout's draws and every ``rate = 0`` run stay as they were. ``None`` when the noise is off."""
    if rate <= 0:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(int(np.random.SeedSequence([seed, epoch, 1]).generate_state(1)[0]))
    return generator


def corrupt_inputs(inputs: torch.Tensor, rate: float, density: torch.Tensor,
                   generator: torch.Generator | None) -> torch.Tensor:
    """A noisy copy of the input frames ``(B, T, 88)`` (0/1 floats); ``inputs`` itself is left untouched.

    Every key of every frame is flipped independently: a key that is on is switched off with probability
    ``q = rate``; key ``k``, when off, is switched on with probability ``s_k = q rho_k / (1 - rho_k)``
    (``density`` = ``rho``, the key's share of training frames; clamped to 1). Then
    ``P(on after) = rho_k (1 - q) + (1 - rho_k) s_k = rho_k``: each key keeps its training frequency, and a
    frame keeps its expected number of notes.

    Why not a symmetric flip: piano rolls are sparse, so flipping every key with probability ``q`` would add
    ``88 q`` spurious notes a frame; here a corrupted frame looks like the network's own mistakes while
    sampling (some notes missing, some wrong, in the keys' own proportions).
    """
    if rate <= 0:
        return inputs
    rho = density.to(inputs.device, torch.float32)
    switch_on = torch.where(rho < 1, rate * rho / (1 - rho).clamp_min(1e-12), torch.ones_like(rho)).clamp(max=1.0)
    flip = torch.where(inputs > 0.5, torch.full_like(inputs, rate), switch_on.expand_as(inputs))
    draws = torch.rand(inputs.shape, generator=generator, device=inputs.device)
    return torch.where(draws < flip, 1.0 - inputs, inputs)


def _active_rows(mask: torch.Tensor, start: int) -> int:
    """How many (longest-first) rows still have a frame to predict at or after frame ``start``."""
    return int((mask[:, start:].sum(1) > 0).sum())


def _first_rows(h, rows: int):
    """The state of the first ``rows`` sequences (``h`` is ``(1, B, p)`` or an LSTM pair of them)."""
    if h is None:
        return None
    if isinstance(h, tuple):
        return tuple(part[:, :rows] for part in h)
    return h[:, :rows]


def _detach(h):
    if h is None:
        return None
    if isinstance(h, tuple):
        return tuple(part.detach() for part in h)
    return h.detach()


def evaluate_tensors(model: PianoRollRNN, pieces: Sequence[torch.Tensor], batch_size: int = 64,
                     window: int = 1000, acc_samples: int = EXPECTED_ACC_SAMPLES,
                     threshold: float | None = None) -> dict:
    """Metrics of ``model`` over ``pieces`` (uint8 tensors on the model's device), pooled.

    NADE output: NLL from the conditional logits (exact), ACC of the greedy frame and expected ACC from
    ``acc_samples`` sampled frames per predicted frame (:func:`metric_predictions`; the per-epoch
    validation uses ``EPOCH_ACC_SAMPLES`` to keep epochs short, the test ``EXPECTED_ACC_SAMPLES``).
    With ``threshold``, also ``"threshold"`` and ``"acc_tuned"``: ACC with keys on when ``p >= threshold``
    (for NADE, ``p`` is the sampled share of frames with the key on).
    """
    totals = _accumulate(model, pieces, batch_size, window, acc_samples)
    result = totals.result()
    if threshold is not None:
        result.update(threshold=float(threshold), acc_tuned=totals.acc_at(threshold))
    return result


def evaluate_nll(model: PianoRollRNN, pieces: Sequence[torch.Tensor], batch_size: int = 64,
                 window: int = 1000) -> dict:
    """The NLL alone of ``model`` over ``pieces``: ``{"nll", "acc": None, "expected_acc": None, "frames"}``.

    The same windows and exact NLL as :func:`evaluate_tensors`, without the ACC figures, which for a NADE output
    draw frames key by key (the greedy frame and the sampled ones), several times the cost of the NLL. Training
    uses it for the training split's NLL of the initial network, the one figure kept of that pass.
    """
    return _accumulate(model, pieces, batch_size, window, None).result()


def choose_threshold(model: PianoRollRNN, pieces: Sequence[torch.Tensor], batch_size: int = 64) -> float | None:
    """The decision threshold of highest ACC on ``pieces`` (the validation split), on a 0.005 grid."""
    return _accumulate(model, pieces, batch_size, 1000, EXPECTED_ACC_SAMPLES).best_threshold()


EVAL_FRAMES = 1024
"""Frames (rows x steps) scored at once by the evaluation: bounds its memory (the NADE's sampled frames, the copy
window's candidates, the vocabulary's softmax are per frame), whatever the batch size and piece lengths."""


def _window_length(rows: int, window: int) -> int:
    """Steps of the next evaluation window over ``rows`` pieces: at most ``window``, and at most
    ``EVAL_FRAMES`` frames in all (at least one step)."""
    return max(1, min(window, EVAL_FRAMES // max(rows, 1)))


@torch.no_grad()
def _accumulate(model: PianoRollRNN, pieces: Sequence[torch.Tensor], batch_size: int, window: int,
                acc_samples: int | None):
    keep_freed_memory()  # the same blocks are freed and allocated again for every chunk
    was_training = model.training
    model.eval()
    totals = MetricAccumulator()
    lengths = [len(p) for p in pieces]
    usable = [i for i, n in enumerate(lengths) if n >= 2]
    for batch in length_batches([lengths[i] for i in usable], batch_size, None):
        inputs, targets, mask = pad_batch([pieces[usable[i]] for i in batch])
        h = None
        start = 0
        while start < inputs.shape[1]:  # windows only bound memory: the same NLL and ACC
            rows = _active_rows(mask, start)
            stop = start + _window_length(rows, window)
            window_inputs = inputs[:rows, start:stop]
            states, h = model.hidden_states(window_inputs, _first_rows(h, rows))
            past = model.head.frames_before(inputs[:rows], start)  # a copy window reaches into the window before
            window_targets = targets[:rows, start:stop]
            if acc_samples is None:  # the NLL alone (evaluate_nll)
                nll = -model.head.log_prob(states, window_targets, window_inputs, past)
                totals.update_nll(nll, mask[:rows, start:stop])
            else:
                scores = model.head.metric_scores(states, window_targets, window_inputs, past, acc_samples,
                                                  seed=start)
                totals.update(targets=window_targets, mask=mask[:rows, start:stop], **scores)
            start = stop
    model.train(was_training)
    return totals


def train_epoch(
    model: PianoRollRNN,
    optimizer: torch.optim.Optimizer,
    pieces: Sequence[torch.Tensor],
    *,
    batch_size: int,
    bptt: int,
    clip: float | None,
    rng: np.random.Generator | None,
    on_batch: Callable[[int, int], None] | None = None,
    cancel=None,
    warmup_steps: int = 0,
    input_noise: float = 0.0,
    density: torch.Tensor | None = None,
    noise_generator: torch.Generator | None = None,
) -> dict:
    """One pass over ``pieces``; returns ``{"nll": mean training NLL per frame, "frames", "steps"}``.

    ``batch_size=1`` with a ``bptt`` longer than every piece is the batch-of-one loop of reference code
    (one piece per optimizer step), used as the baseline of the throughput benchmark.
    ``warmup_steps``: the learning rate rises linearly over the first optimizer steps of the run (the
    count lives in the optimizer's param groups, so it survives checkpoints).
    ``input_noise`` ``q > 0``: every batch's input frames are corrupted by :func:`corrupt_inputs` with the
    training key frequencies ``density`` ``(88,)`` and draws from ``noise_generator``; the targets (the next
    frames) stay clean. Evaluation never adds noise.
    """
    if input_noise > 0 and density is None:
        raise ValueError("input_noise needs the training key density")
    keep_freed_memory()  # the same blocks are freed and allocated again for every window
    model.train()
    lengths = [len(p) for p in pieces]
    usable = [i for i, n in enumerate(lengths) if n >= 2]
    batches = length_batches([lengths[i] for i in usable], batch_size, rng)
    total_nll, total_frames, steps = 0.0, 0, 0
    for number, batch in enumerate(batches):
        if cancel is not None and cancel.is_set():
            raise TrainingCancelled("cancelled")
        inputs, targets, mask = pad_batch([pieces[usable[i]] for i in batch])
        if input_noise > 0:  # a new tensor: ``targets`` is a view of the same clean rolls
            inputs = corrupt_inputs(inputs, input_noise, density, noise_generator)
        h = None
        for start in range(0, inputs.shape[1], bptt):
            rows = _active_rows(mask, start)  # pieces that ended in earlier windows drop out of the batch
            window_mask = mask[:rows, start : start + bptt]
            frames = window_mask.sum()
            window_targets = targets[:rows, start : start + bptt]
            per_frame, h = model.frame_nll(inputs[:rows, start : start + bptt], _first_rows(h, rows),
                                           targets=window_targets, past=model.head.frames_before(inputs[:rows], start))
            h = _detach(h)
            loss_sum = (per_frame * window_mask).sum()
            loss = loss_sum / frames
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    "the training loss became NaN/inf; the run keeps its last good checkpoint. "
                    "Try a lower --lr, gradient clipping, or a smaller --alpha"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            if warmup_steps:
                _warm_up(optimizer, warmup_steps)
            optimizer.step()
            total_nll += float(loss_sum.detach())
            total_frames += int(frames)
            steps += 1
        if on_batch is not None:
            on_batch(number + 1, len(batches))
    return {"nll": total_nll / total_frames if total_frames else float("nan"), "frames": total_frames,
            "steps": steps}


def _warm_up(optimizer: torch.optim.Optimizer, warmup_steps: int) -> None:
    """Linear warm-up: step ``k`` (1-based) of the run uses ``lr * k / warmup_steps`` until ``k = warmup_steps``.

    Why: Adam normalises the small, noisy gradients at the LAE init's fitted readout to full-size steps;
    warming up lets its second-moment estimate settle first.
    """
    for group in optimizer.param_groups:
        done = group.setdefault("warmup_done", 0)
        if done < warmup_steps:
            target = group.setdefault("target_lr", group["lr"])
            group["lr"] = target * (done + 1) / warmup_steps
            group["warmup_done"] = done + 1
