"""The output layer ("head") interface of :class:`lapmusic.model.rnn.PianoRollRNN`, and the Bernoulli head.

The recurrent network turns the frames read ``x_1 .. x_t`` into states ``s_t`` (``p`` units); a head turns a
state (and the frames read) into a distribution over the next frame ``x_{t+1}``. Every head implements:

- :meth:`OutputHead.log_prob`: the exact ``log p(x_{t+1} | s_t, frames read)`` of given frames (training,
  evaluation);
- :meth:`OutputHead.key_logits`: per-key logits whose summed BCE is that NLL (``forward``), where they exist;
- :meth:`OutputHead.metric_scores`: what :class:`lapmusic.model.metrics.MetricAccumulator` pools for NLL,
  ACC and expected ACC;
- :meth:`OutputHead.frames_before`: the frames read before a BPTT or evaluation window that it looks back to;
- :meth:`OutputHead.prepare` (what it takes from the training split) and :meth:`OutputHead.set_readout` (the
  LAE initialisation's fitted readout);
- sampling: a head whose keys are independent given the state (``independent_keys``) is sampled from its
  logits by :func:`lapmusic.sampling.sample.generate`; the others draw whole frames with
  :meth:`OutputHead.sample`, reading the frames before each step through :meth:`OutputHead.start_history` and
  :meth:`OutputHead.advance_history`.

The variants: :class:`BernoulliHead` (here), :class:`lapmusic.model.nade.NADEOutput`,
:class:`lapmusic.model.chordvocab.ChordVocabNADE` and the copy mixtures of :mod:`lapmusic.model.repeatmix`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn


class OutputHead(nn.Module):
    """The interface of an output layer over ``n_keys`` keys, for states of ``state_size`` units.

    Attributes
    ----------
    independent_keys : bool
        The keys of a frame are independent given the state: :meth:`key_logits` says everything, and
        sampling draws each key from its own sigmoid.
    lookback : int
        How many frames read before a window :meth:`log_prob` looks back to (0: none).
    """

    independent_keys = False
    lookback = 0

    def log_prob(self, states: torch.Tensor, frames: torch.Tensor, inputs: torch.Tensor | None = None,
                 past: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log-likelihood of the given next frames.

        Parameters
        ----------
        states : Tensor of shape (..., p)
            Recurrent states (after dropout when training).
        frames : Tensor of shape (..., K)
            The 0/1 frames predicted.
        inputs : Tensor of shape (..., K), optional
            The frames read at each step (the frame before each predicted one).
        past : Tensor of shape (B, P, K), optional
            The frames read just before ``inputs`` (:meth:`frames_before`; only heads with a ``lookback``).

        Returns
        -------
        Tensor of shape (...)
            ``log p(frame | state, frames read)`` in nats.
        """
        raise NotImplementedError

    def key_logits(self, states: torch.Tensor, inputs: torch.Tensor,
                   targets: torch.Tensor | None = None) -> torch.Tensor:
        """Per-key logits ``(..., K)`` whose summed binary cross-entropy against ``targets`` is the NLL.

        Raises
        ------
        ValueError
            When the head needs ``targets`` and got none, or has no such logits (a frame mixture).
        """
        raise NotImplementedError

    def metric_scores(self, states: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor,
                      past: torch.Tensor | None, samples: int, seed: int) -> dict:
        """Keyword arguments of :meth:`lapmusic.model.metrics.MetricAccumulator.update` for these frames.

        ``samples`` frames drawn per predicted frame (seeded with ``seed``) estimate the expected ACC of
        heads whose key marginals are intractable.
        """
        raise NotImplementedError

    def set_readout(self, W: torch.Tensor, c: torch.Tensor, skip: torch.Tensor | None = None) -> None:
        """Install the readout ``W s + c`` (``W`` ``(K, p)``, ``c`` ``(K,)``) fitted on the LAE states, so the
        network starts as that independent-key model; ``skip`` ``(K, K)``: the readout skip's weight."""
        raise NotImplementedError

    def acc_method(self) -> str:
        """How ACC and expected ACC are computed for this head (written into ``final.json``)."""
        raise NotImplementedError

    def prepare(self, pieces: Sequence[np.ndarray]) -> None:
        """Set what the head takes from the training split's pieces (``(T, K)`` each) before training."""

    def frames_before(self, inputs: torch.Tensor, start: int) -> torch.Tensor | None:
        """The frames of ``inputs`` ``(B, T, K)`` read just before step ``start`` that :meth:`log_prob` looks back
        to, ``(B, <= lookback, K)``; ``None`` without a lookback."""
        if self.lookback == 0:
            return None
        return inputs[:, max(0, start - self.lookback) : start]

    def sample(self, states: torch.Tensor, temperature: float = 1.0, max_polyphony: int | None = None,
               generator: torch.Generator | None = None, inputs: torch.Tensor | None = None,
               **history: torch.Tensor) -> torch.Tensor:
        """Draw one frame per state (heads whose keys are not ``independent_keys``).

        Parameters
        ----------
        states : Tensor of shape (N, p)
            One state per frame to draw.
        temperature : float
            Every logit is divided by it (0: the greedy frame).
        max_polyphony : int, optional
            At most this many keys on per frame.
        generator : torch.Generator, optional
            The random stream.
        inputs : Tensor of shape (N, K), optional
            The frame read at each state.
        **history
            :meth:`start_history`'s keyword arguments, for heads that look back further.

        Returns
        -------
        Tensor of shape (N, K)
            uint8 0/1 frames.
        """
        raise NotImplementedError(f"{type(self).__name__} frames are drawn from the logits of forward "
                                  "(lapmusic.sampling.sample.generate)")

    def start_history(self, warm: torch.Tensor) -> dict[str, torch.Tensor]:
        """Sampling: the keyword arguments of ``sample`` that carry the frames read before the current one,
        from the warm-up frames ``(N, k, K)`` (empty without a lookback)."""
        return {}

    def advance_history(self, history: dict[str, torch.Tensor], read: torch.Tensor) -> dict[str, torch.Tensor]:
        """Sampling: ``history`` after the frame ``read`` ``(N, K)`` has been fed back."""
        return history


class BernoulliHead(OutputHead):
    """88 independent sigmoids: ``logits = W_out s_t + c`` (``readout``), with the readout skip also
    ``+ W_skip x_t`` for the frame ``x_t`` just read (``skip``, ``(K, K)``, no bias, zero at the start so the
    network starts as the plain one; ``None`` without the skip)."""

    independent_keys = True

    def __init__(self, state_size: int, n_keys: int, skip: bool = False):
        super().__init__()
        self.readout = nn.Linear(state_size, n_keys)
        self.skip = None
        if skip:
            with torch.random.fork_rng(devices=[]):  # draws nothing: the other weights and later draws
                self.skip = nn.Linear(n_keys, n_keys, bias=False)  # match the plain network's
            nn.init.zeros_(self.skip.weight)

    def extra_repr(self) -> str:
        return "readout_skip=True" if self.skip is not None else ""

    def key_logits(self, states: torch.Tensor, inputs: torch.Tensor,
                   targets: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.readout(states)
        if self.skip is not None:
            logits = logits + self.skip(inputs)
        return logits

    def log_prob(self, states: torch.Tensor, frames: torch.Tensor, inputs: torch.Tensor | None = None,
                 past: torch.Tensor | None = None) -> torch.Tensor:
        """``-sum_k BCE(l_k, x_k)`` of the independent keys (see :meth:`OutputHead.log_prob`)."""
        logits = self.key_logits(states, inputs)
        return -nn.functional.binary_cross_entropy_with_logits(
            logits, frames.to(logits.dtype), reduction="none").sum(-1)

    def metric_scores(self, states: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor,
                      past: torch.Tensor | None, samples: int, seed: int) -> dict:
        return {"logits": self.key_logits(states, inputs)}

    def set_readout(self, W: torch.Tensor, c: torch.Tensor, skip: torch.Tensor | None = None) -> None:
        if skip is not None and self.skip is None:
            raise ValueError("a skip weight was given but the network has no readout skip")
        with torch.no_grad():
            self.readout.weight.copy_(W.to(self.readout.weight.device))
            self.readout.bias.copy_(c.to(self.readout.bias.device))
            if self.skip is not None:
                if skip is None:
                    self.skip.weight.zero_()
                else:
                    self.skip.weight.copy_(skip.to(self.skip.weight.device))

    def acc_method(self) -> str:
        return "ACC: each key p >= 0.5; expected ACC: soft counts of the key probabilities"
