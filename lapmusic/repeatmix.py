"""A "repeat the previous frame" component for the NADE output (``TrainConfig.nade_repeat``, ``--nade-repeat``).

Why: given the true history, one frame drawn from the NADE (with or without the chord vocabulary) repeats the
frame before it about a third as often as the music does (JSB: 0.044-0.057 against 0.13-0.14; docs/sampling.md,
"Distinct chords per frame"). Holding a chord exactly is one event for the music but a conjunction of 88 key
decisions for the NADE. Here it is one event: with probability ``r(h)`` the frame is an exact copy of the frame
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

from .chordvocab import ChordVocabNADE
from .nade import NADEOutput


def repeat_share(pieces: Sequence[np.ndarray]) -> float:
    """Share of the predicted frames (frames ``2..T`` of each piece) equal to the frame before them.

    Returns 0 when no piece has two frames."""
    same = total = 0
    for piece in pieces:
        roll = np.asarray(piece) > 0
        if len(roll) < 2:
            continue
        same += int((roll[1:] == roll[:-1]).all(1).sum())
        total += len(roll) - 1
    return same / total if total else 0.0


class RepeatMixture:
    """Mixin over an output layer ``q`` (:class:`NADEOutput` or :class:`ChordVocabNADE`): adds the repeat gate
    ``repeat_gate`` (``Linear(state_size, 1)``) and overrides ``log_prob`` and ``sample`` (module docstring).

    ``inputs`` (the frames read, ``(..., K)``) are required by both, with or without the NADE's skip."""

    def __init__(self, state_size: int, n_keys: int, hidden: int, **kwargs):
        super().__init__(state_size, n_keys, hidden, **kwargs)
        self.repeat_gate = nn.Linear(state_size, 1)
        self.set_repeat_share(0.1)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", repeat=True"

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

    def log_prob(self, states: torch.Tensor, frames: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Exact ``log p(x | h, x_prev)`` ``(...)`` for frames ``(..., K)`` and the frames read ``inputs`` ``(..., K)``."""
        if inputs is None:
            raise ValueError("the repeat component needs the frames read: pass inputs (..., K)")
        inner = super().log_prob(states, frames, inputs)
        gate = self.repeat_logit(states)
        same = ((frames > 0.5) == (inputs > 0.5)).all(-1)
        copy = torch.where(same, nn.functional.logsigmoid(gate), torch.full_like(gate, -math.inf))
        return torch.logaddexp(copy, nn.functional.logsigmoid(-gate) + inner)

    @torch.no_grad()
    def sample(self, states: torch.Tensor, temperature: float = 1.0, max_polyphony: int | None = None,
               generator: torch.Generator | None = None, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """One frame per state ``(N, p)`` -> ``(N, K)`` uint8 (module docstring, "Sampling"); ``inputs`` ``(N, K)``.

        Random numbers, in this order: the inner frame of every row, then one uniform per row for the repeat."""
        if inputs is None:
            raise ValueError("the repeat component needs the frames read: pass inputs (N, K)")
        inner = super().sample(states, temperature, max_polyphony, generator, inputs)
        previous = (inputs > 0.5).to(torch.uint8)
        gate = self.repeat_logit(states)
        allowed = torch.ones_like(gate, dtype=torch.bool)
        if max_polyphony is not None:
            allowed = previous.sum(1) <= max_polyphony
        if temperature == 0.0:
            use = (gate >= 0) & allowed
        else:
            uniform = torch.rand(len(gate), generator=generator, device=gate.device, dtype=gate.dtype)
            use = (uniform < torch.sigmoid(gate / temperature)) & allowed
        return torch.where(use.unsqueeze(1), previous, inner)


class RepeatNADE(RepeatMixture, NADEOutput):
    """The NADE with the repeat component: ``r 1[x = x_prev] + (1 - r) NADE(x | h)``."""


class RepeatChordVocabNADE(RepeatMixture, ChordVocabNADE):
    """The chord-vocabulary mixture with the repeat component (three components, stick-breaking gates)."""
