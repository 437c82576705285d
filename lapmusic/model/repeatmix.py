"""A "repeat the previous frame" component for the NADE output (``ModelConfig.nade_repeat``, ``--nade-repeat``).

Why: holding a chord exactly is one event for the music but a conjunction of 88 key decisions for the NADE,
which gives the real previous frame less probability than the music holds frames (docs/research/nade-sampling.md, "Repeat
component"). Here it is one event: with probability ``r(h)`` the frame is an exact copy of the frame
just read ``x_prev`` (the network's input at this step; the zero frame before a sample without primer),
otherwise it comes from the inner output ``q`` (the NADE, or the chord-vocabulary mixture)::

    p(x | h, x_prev) = r(h) 1[x = x_prev] + (1 - r(h)) q(x | h, x_prev)

    r(h) = sigmoid(g_r(h)),   g_r(h) = w_r . h + b_r            (the repeat gate, Linear(p, 1))

With the chord vocabulary this is a three-component mixture whose weights are a stick-breaking of two sigmoid
gates: ``pi_repeat = r``, ``pi_vocab = (1 - r) pi``, ``pi_nade = (1 - r)(1 - pi)`` (every point of the simplex is
reachable, as with a softmax of three logits). Both parts are normalised over all ``2^K`` frames, so ``p`` is too,
and the log-likelihood is exact::

    log p(x) = logaddexp(log r, log(1 - r) + log q(x))     if x = x_prev
             = log(1 - r) + log q(x)                          otherwise

**Sampling** at temperature ``T > 0``: the inner frame is drawn first (its random numbers as without the repeat),
then one uniform per row: the previous frame is copied with probability ``sigmoid(g_r / T)``. ``T = 0``: the
copy when ``r >= 0.5``, else the inner greedy frame. ``max_polyphony = m``: a previous frame of more than ``m``
keys is never copied (the repeat is masked out, the inner frame is used); primers work as before (the frame
read after the primer is its last frame).

**Copy window** (``ModelConfig.nade_repeat_window = L``, ``--nade-repeat-window L``; default 1, all of the
above): the copy chooses among the last ``L`` frames read, a pointer mixture::

    p(x | h, history) = r(h) sum_{k=1..L} w_k(h) 1[x = c_k] + (1 - r(h)) q(x | h, x_prev)
    w(h) = softmax over the available k of  U h + d          (offset_logits, Linear(p, L), starts at zero)

with ``c_1 = x_prev`` the frame read, ``c_k`` the frame read ``k - 1`` steps before it; offsets before the start
of the piece (the frame read at the first step is the piece's first frame, or the zero frame before a sample
from silence) do not exist and are masked out of the softmax. A frame equal to several candidates collects all
their weights (``logsumexp`` over the matching offsets), so ``p`` still sums to one. ``L = 1`` has no
``offset_logits`` (``w_1 = 1``) and is the plain repeat exactly. The candidates of all steps come from one
``unfold`` over the frames read; a BPTT or evaluation window passes the frames read before it (``past``) so the
likelihood does not depend on where the windows are cut. Sampling: the inner frame, the copy decision as above,
then (``L > 1``) the offset from ``softmax(logits / T)`` over the offsets that exist and are allowed by the
polyphony cap (``T = 0``: the likeliest); with none allowed the inner frame is used. The gate starts at half the
share of training frames equal to one of the ``L`` frames before them (:func:`repeat_share` with ``window``).

**Initialisation** (:meth:`RepeatMixture.set_repeat_share`): ``w_r = 0`` and ``b_r = logit(s / 2)`` with ``s``
the share of training frames equal to the frame before them (half of it: the inner output also places mass on
the repeated frame). The inner output is initialised as without the repeat (the LAE readout pre-fit still sets
the NADE's visible biases).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from lapmusic.model.chordvocab import ChordVocabNADE
from lapmusic.model.nade import NADEOutput


def repeat_share(pieces: Sequence[np.ndarray], window: int = 1) -> float:
    """Share of the predicted frames (frames ``2..T`` of each piece) equal to one of the ``window`` frames before
    them (in the same piece; ``window = 1``: the frame before).

    Returns 0 when no piece has two frames."""
    same = total = 0
    for piece in pieces:
        roll = np.asarray(piece) > 0
        if len(roll) < 2:
            continue
        hit = np.zeros(len(roll) - 1, dtype=bool)
        for k in range(1, min(window, len(roll) - 1) + 1):  # frame t against frame t - k
            hit[k - 1:] |= (roll[k:] == roll[:-k]).all(1)
        same += int(hit.sum())
        total += len(roll) - 1
    return same / total if total else 0.0


_BITS = 62  # keys packed per int64 word (below 63: every packed value is a non-negative int64)


def pack_frames(frames: torch.Tensor) -> torch.Tensor:
    """Frames ``(..., K)`` (on where ``> 0.5``) as exact bit patterns ``(..., ceil(K / 62))`` int64: two frames are
    equal iff their words are (88 keys: 2 words, so comparing candidates costs 2 operations, not 88)."""
    keys = frames.shape[-1]
    words = -(-keys // _BITS)
    bits = (frames > 0.5).long()
    if words * _BITS != keys:
        bits = nn.functional.pad(bits, (0, words * _BITS - keys))
    powers = torch.pow(2, torch.arange(_BITS, device=frames.device, dtype=torch.long))
    return (bits.reshape(*frames.shape[:-1], words, _BITS) * powers).sum(-1)


class RepeatMixture:
    """Mixin over an output layer ``q`` (:class:`NADEOutput` or :class:`ChordVocabNADE`): adds the repeat gate
    ``repeat_gate`` (``Linear(state_size, 1)``) and overrides ``log_prob`` and ``sample`` (module docstring).

    ``inputs`` (the frames read, ``(..., K)``) are required by both, with or without the NADE's skip."""

    frame_mixture = True

    def __init__(self, state_size: int, n_keys: int, hidden: int, window: int = 1, **kwargs):
        super().__init__(state_size, n_keys, hidden, **kwargs)
        if int(window) < 1:
            raise ValueError(f"window must be a positive integer, got {window}")
        self.window = int(window)
        self.lookback = self.window - 1  # the frames before a window that candidates() reads
        self.repeat_gate = nn.Linear(state_size, 1)
        # L = 1 has no offset logits (the one offset has weight 1): its state dict is the plain repeat's
        self.offset_logits = nn.Linear(state_size, self.window) if self.window > 1 else None
        if self.offset_logits is not None:
            nn.init.zeros_(self.offset_logits.weight)  # every offset equally likely at the start
            nn.init.zeros_(self.offset_logits.bias)
        self.set_repeat_share(0.1)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", repeat=True" + (f", window={self.window}" if self.window > 1 else "")

    def prepare(self, pieces: Sequence[np.ndarray]) -> None:
        """The inner output's preparation, then the gate's start from the training split (:func:`repeat_share`)."""
        super().prepare(pieces)
        self.set_repeat_share(repeat_share(pieces, self.window))

    def greedy_choice(self) -> str:
        if self.window > 1:
            copy = (f"the likeliest of the last {self.window} frames read when the repeat gate gives the copy "
                    "p >= 0.5, else ")
        else:
            copy = "the previous frame when the repeat gate gives it p >= 0.5, else "
        return copy + super().greedy_choice()

    def set_repeat_share(self, share: float) -> None:
        """Start the gate at ``r = share / 2`` for every state (``share``: :func:`repeat_share` of the training
        split), clipped to ``[1e-3, 1 - 1e-3]``."""
        start = min(max(float(share) / 2, 1e-3), 1 - 1e-3)
        with torch.no_grad():
            self.repeat_gate.weight.zero_()
            self.repeat_gate.bias.fill_(math.log(start / (1 - start)))

    def repeat_logit(self, states: torch.Tensor) -> torch.Tensor:
        """The gate logit ``g_r`` ``(...)`` for states ``(..., p)``."""
        return self.repeat_gate(states).squeeze(-1)

    def log_offset_weights(self, states: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``log w_k(h)`` ``(..., L)``: log-softmax over the offsets ``k = 1..L`` of ``offset_logits(h)``, offsets
        where ``valid`` ``(..., L)`` is False (before the start of the piece) at ``-inf``. ``L = 1``: zeros."""
        if self.offset_logits is None:
            return torch.zeros(valid.shape, dtype=states.dtype, device=states.device)
        logits = self.offset_logits(states).masked_fill(~valid, -math.inf)
        return torch.log_softmax(logits, -1)

    def candidates(self, inputs: torch.Tensor, past: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The frames the copy may choose from: ``(cand (..., L, K) bool, valid (..., L) bool)``.

        ``L = 1``: ``inputs`` ``(..., K)`` (the frame read) is the one candidate. ``L > 1``: ``inputs`` ``(B, T, K)``
        are the frames read at steps ``0..T-1`` and ``past`` ``(B, P, K)`` (``P <= L - 1``, ``None``: ``P = 0``, the
        start of the piece) the frames read just before them; candidate ``k`` of step ``t`` is the frame read at
        step ``t - k + 1``, valid iff that step exists (``t - k + 1 >= -P``). One ``unfold`` over the padded
        sequence, no loop over time."""
        on = inputs > 0.5
        if self.window == 1:
            return on.unsqueeze(-2), torch.ones(on.shape[:-1] + (1,), dtype=torch.bool, device=on.device)
        windows, valid = self._windows(on, None if past is None else past > 0.5)  # (B, T, K, L), oldest first
        return windows.flip(-1).transpose(-1, -2), valid  # (B, T, L, K): offset k = 1 (the frame read) first

    def copy_matches(self, frames: torch.Tensor, inputs: torch.Tensor,
                     past: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(same (..., L) bool, valid (..., L) bool)``: candidate ``k`` (:meth:`candidates`) exists and equals the
        frame ``frames`` ``(..., K)``. Compared as packed bit patterns (:func:`pack_frames`): the same answer as
        comparing the ``(..., L, K)`` candidates key by key, without building them."""
        target = pack_frames(frames)  # (..., W)
        if self.window == 1:
            valid = torch.ones(target.shape[:-1] + (1,), dtype=torch.bool, device=target.device)
            return (target == pack_frames(inputs)).all(-1, keepdim=True), valid
        windows, valid = self._windows(pack_frames(inputs), None if past is None else pack_frames(past))
        same = (windows == target.unsqueeze(-1)).all(-2).flip(-1)  # (B, T, L): offset 1 (the frame read) first
        return same & valid, valid

    def _windows(self, read: torch.Tensor, past: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The last ``L`` frames read at each step, per-frame features kept: ``read`` ``(B, T, C)`` and ``past``
        ``(B, P, C)`` (key bits or packed words) give ``(windows (B, T, C, L) oldest first, valid (B, T, L)
        newest first)``. One ``unfold`` over the zero-padded sequence, no loop over time."""
        if read.dim() != 3:
            raise ValueError(f"a window of {self.window} frames needs inputs (B, T, K), got {tuple(read.shape)}")
        b, t, c = read.shape
        lead = self.window - 1
        before = past.shape[1] if past is not None else 0
        if before > lead:
            raise ValueError(f"past holds {before} frames, the window looks back {lead}")
        parts = [read.new_zeros(b, lead - before, c)] + ([past] if before else []) + [read]
        windows = torch.cat(parts, 1).unfold(1, self.window, 1)  # step t of read at row lead + t
        steps = torch.arange(t, device=read.device)[:, None] - torch.arange(self.window, device=read.device)[None, :]
        return windows, (steps >= -before).unsqueeze(0).expand(b, t, self.window)

    def history_kwargs(self, inputs: torch.Tensor | None, past: torch.Tensor | None,
                       dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """``history`` ``(N, L, K)`` and ``history_valid`` ``(N, L)`` of every flattened step for a window
        ``L > 1`` (:meth:`candidates`); nothing for ``L = 1``, where :meth:`sample` copies the frame read."""
        if self.window == 1:
            return {}
        cand, valid = self.candidates(inputs, past)  # inputs (B, T, K), past (B, P, K)
        # uint8, not the states' dtype: (N, L, K) 0/1 frames per step, a quarter of the memory of floats
        return {"history": cand.reshape(-1, *cand.shape[-2:]).to(torch.uint8),
                "history_valid": valid.reshape(-1, valid.shape[-1])}

    def start_history(self, warm: torch.Tensor) -> dict[str, torch.Tensor]:
        """Sampling with a window ``L > 1``: ``history`` ``(N, L, K)`` (the last ``L`` frames of ``warm`` ``(N, k, K)``,
        the newest first, zeros before them) and ``history_valid`` ``(N, L)``; nothing for ``L = 1``."""
        if self.window == 1:
            return {}
        n = warm.shape[0]
        history = torch.zeros((n, self.window, warm.shape[-1]), dtype=warm.dtype, device=warm.device)
        seen = warm.flip(1)[:, : self.window]
        history[:, : seen.shape[1]] = seen
        valid = torch.zeros((n, self.window), dtype=torch.bool, device=warm.device)
        valid[:, : seen.shape[1]] = True
        return {"history": history, "history_valid": valid}

    def advance_history(self, history: dict[str, torch.Tensor], read: torch.Tensor) -> dict[str, torch.Tensor]:
        """The window after the frame ``read`` ``(N, K)``: it becomes offset 1, the oldest frame drops out."""
        if not history:
            return history
        valid = history["history_valid"]
        return {"history": torch.cat([read.unsqueeze(1), history["history"][:, :-1]], 1),
                "history_valid": torch.cat([valid.new_ones(len(valid), 1), valid[:, :-1]], 1)}

    def log_prob(self, states: torch.Tensor, frames: torch.Tensor, inputs: torch.Tensor | None = None,
                 past: torch.Tensor | None = None) -> torch.Tensor:
        """Exact ``log p(x | h, history)`` ``(...)`` for frames ``(..., K)``, the frames read ``inputs`` (``(..., K)``
        for ``L = 1``, ``(B, T, K)`` for a window) and ``past`` (:meth:`candidates`)::

            log p(x) = logaddexp(log r + logsumexp_k [log w_k + log 1[x = c_k]], log(1 - r) + log q(x))

        (a frame equal to several candidates collects all their weights)."""
        if inputs is None:
            raise ValueError("the repeat component needs the frames read: pass inputs (..., K)")
        inner = super().log_prob(states, frames, inputs)
        gate = self.repeat_logit(states)
        same, valid = self.copy_matches(frames, inputs, past)
        log_w = self.log_offset_weights(states, valid)
        copy_w = torch.logsumexp(torch.where(same, log_w, torch.full_like(log_w, -math.inf)), -1)
        copy = nn.functional.logsigmoid(gate) + copy_w
        return torch.logaddexp(copy, nn.functional.logsigmoid(-gate) + inner)

    @torch.no_grad()
    def sample(self, states: torch.Tensor, temperature: float = 1.0, max_polyphony: int | None = None,
               generator: torch.Generator | None = None, inputs: torch.Tensor | None = None,
               history: torch.Tensor | None = None, history_valid: torch.Tensor | None = None) -> torch.Tensor:
        """One frame per state ``(N, p)`` -> ``(N, K)`` uint8 (module docstring, "Sampling"); ``inputs`` ``(N, K)``
        the frame read. A window ``L > 1`` also needs ``history`` ``(N, L, K)`` (the last ``L`` frames read, the
        newest first: ``history[:, 0] = inputs``) and ``history_valid`` ``(N, L)`` (False where the piece had not
        started); without them only offset 1 (``inputs``) is available.

        Random numbers, in this order: the inner frame of every row, then one uniform per row for the repeat,
        then (``L > 1`` only) one uniform per row for the offset."""
        if inputs is None:
            raise ValueError("the repeat component needs the frames read: pass inputs (N, K)")
        inner = super().sample(states, temperature, max_polyphony, generator, inputs)
        if history is None:
            history = inputs.unsqueeze(1)
            history_valid = torch.ones(len(inputs), 1, dtype=torch.bool, device=inputs.device)
            if self.window > 1:
                history = torch.cat([history, history.new_zeros(len(inputs), self.window - 1, inputs.shape[-1])], 1)
                history_valid = torch.cat([history_valid, history_valid.new_zeros(len(inputs), self.window - 1)], 1)
        allowed = history_valid.clone()
        if max_polyphony is not None:
            allowed &= (history > 0.5).sum(-1) <= max_polyphony  # a candidate over the cap is never copied
        gate = self.repeat_logit(states)
        any_allowed = allowed.any(1)
        if self.offset_logits is not None:
            logits = self.offset_logits(states)
        else:
            logits = torch.zeros_like(allowed, dtype=gate.dtype)
        if temperature == 0.0:
            use = (gate >= 0) & any_allowed
            offset = logits.masked_fill(~allowed, -math.inf).argmax(1)
        else:
            uniform = torch.rand(len(gate), generator=generator, device=gate.device, dtype=gate.dtype)
            use = (uniform < torch.sigmoid(gate / temperature)) & any_allowed
            offset = torch.zeros(len(gate), dtype=torch.long, device=gate.device)
            if self.window > 1:  # inverse CDF of softmax(logits / T) over the allowed offsets
                probs = torch.softmax((logits / temperature).masked_fill(~allowed, -math.inf), 1)
                probs = torch.nan_to_num(probs, nan=0.0)  # rows with nothing allowed (never copied)
                u = torch.rand(len(gate), 1, generator=generator, device=gate.device, dtype=gate.dtype)
                offset = (torch.cumsum(probs, 1) <= u).sum(1).clamp(max=self.window - 1)
                # guard against rounding: an offset that is not allowed falls back to the likeliest allowed one
                bad = ~allowed.gather(1, offset[:, None])[:, 0]
                offset = torch.where(bad, probs.argmax(1), offset)
        # only the chosen candidate of each row is read: (N, L, K) passes over the history were most of the time
        chosen = (history[torch.arange(len(history), device=history.device), offset] > 0.5).to(torch.uint8)
        return torch.where(use.unsqueeze(1), chosen, inner)


class RepeatNADE(RepeatMixture, NADEOutput):
    """The NADE with the repeat component: ``r 1[x = x_prev] + (1 - r) NADE(x | h)``."""


class RepeatChordVocabNADE(RepeatMixture, ChordVocabNADE):
    """The chord-vocabulary mixture with the repeat component (three components, stick-breaking gates)."""
