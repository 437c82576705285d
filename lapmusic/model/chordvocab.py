"""A chord-vocabulary mixture on top of the RNN-NADE output (``ModelConfig.nade_vocab``, ``--nade-vocab N``).

Why: the NADE spreads a frame's probability over many near-miss voicings (one key different is another
chord), so samples at temperature 1 change chord far more often than the music (docs/research/nade-sampling.md, "Distinct
chords per frame"). Here the frame distribution is an exact two-component mixture: with probability
``pi(h)`` a *whole chord* is picked from a vocabulary ``V`` of the training split's most frequent frames,
otherwise the NADE draws a frame key by key::

    p(x | h) = pi(h) Cat_V(x | h) 1[x in V] + (1 - pi(h)) NADE(x | h)

    pi(h)      = sigmoid(g(h)),            g(h) = w . h + b_g          (the gate, Linear(p, 1))
    Cat_V(v|h) = softmax(z(h))_v,          z(h) = W_z h + b_z          (Linear(p, |V|), one logit per chord)

(``ModelConfig.nade_vocab_rank = r > 0``: ``W_z = U D`` of rank ``r``, :class:`LowRankLinear`, for speed.)

``V`` (a buffer ``chords`` ``(|V|, K)`` uint8, saved with the weights) holds the ``N`` most frequent distinct
frames of the run's training split, the empty frame included when it is among them (:func:`build_vocabulary`;
ties broken by the frame's 0/1 pattern read from the lowest key, lexicographically). Both components are
normalised over all ``2^K`` frames, so ``p`` is too, and its log-likelihood is exact and cheap::

    log p(x | h) = logaddexp(log pi + log Cat_V(x), log(1 - pi) + log NADE(x))   if x in V
                 = log(1 - pi) + log NADE(x)                                      otherwise

(``log pi = logsigmoid(g)``, ``log(1 - pi) = logsigmoid(-g)``, ``log NADE`` from the running-sum form of
:class:`lapmusic.model.nade.NADEOutput`). Looking ``x`` up in ``V`` is exact: an integer hash of the frame finds the
candidate row by binary search and the row is then compared key by key.

**Sampling** (:meth:`ChordVocabNADE.sample`), temperature ``T > 0``: the component is drawn first, vocabulary
with probability ``sigmoid(g / T)`` (the gate logit divided by ``T`` like every other logit); then a chord from
``softmax(z / T)``, or a NADE frame drawn at temperature ``T`` exactly as without the vocabulary. ``T = 0``
(the greedy frame, which ACC counts): the vocabulary's most probable chord when ``pi >= 0.5``, else the NADE's
greedy frame (the mode of the more probable component, not the mixture's mode, which is intractable).
``max_polyphony = m``: chords of more than ``m`` keys are masked out of the softmax (so a vocabulary chord is
never cut), and the NADE component keeps its own rule (keys above the first ``m`` drawn are off); a frame whose
allowed vocabulary is empty would fall back to the NADE (impossible while the empty frame is in ``V``).
Expected ACC uses frames drawn from the whole mixture (:func:`lapmusic.model.nade.metric_predictions`).

**Initialisation** (:meth:`ChordVocabNADE.set_vocabulary`): ``W_z = 0`` and ``b_z = log`` (training
frequency of each chord), so ``Cat_V`` starts as the vocabulary's own frequencies; ``w = 0`` and ``b_g =
logit(c / 2)`` with ``c`` the share of training frames whose chord is in ``V`` (the vocabulary can at most
explain that share; half of it trusts both components alike on the frames it covers). The NADE part is
initialised as without the vocabulary, so the LAE readout pre-fit (:meth:`NADEOutput.set_readout`) still
sets it; the mixture then starts as ``pi_0`` frequencies + ``(1 - pi_0)`` the fitted independent model.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from lapmusic.model.nade import NADEOutput, in_chunks

_HASH_SEED = 20141208  # fixed: the frame hashes only locate candidates, equality is then checked key by key


def build_vocabulary(pieces: Sequence[np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The ``size`` most frequent distinct frames of ``pieces`` (each ``(T, K)``, nonzero = on).

    Returns ``(chords (M, K) uint8, counts (M,) int64, frames)``: ``M = min(size, distinct frames)``, sorted by
    count (highest first), ties by the 0/1 pattern from the lowest key up (lexicographic, ``0 < 1``, so of two
    equally frequent chords the one whose lowest differing key is off comes first); ``frames`` is the total
    number of frames counted.
    """
    if size < 1:
        raise ValueError(f"the vocabulary needs at least one chord, got size {size}")
    rolls = [(np.asarray(p) > 0).astype(np.uint8) for p in pieces if len(p)]
    if not rolls:
        raise ValueError("no frame to build the chord vocabulary from")
    frames = np.concatenate(rolls)
    unique, counts = np.unique(frames, axis=0, return_counts=True)  # rows sorted lexicographically
    order = np.argsort(-counts, kind="stable")[:size]  # stable: ties keep the lexicographic order
    return unique[order], counts[order].astype(np.int64), int(len(frames))


def _hash_weights(n_keys: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(_HASH_SEED)
    # below 2**55: a sum over 88 keys stays below 2**62, so the int64 hash never overflows (same on every device)
    return torch.randint(1, 2**55, (n_keys,), generator=generator, dtype=torch.int64)


class LowRankLinear(nn.Module):
    """``z = U (D h) + b``: a ``Linear(in_features, out_features)`` whose weight is the rank-``r`` product
    ``U D`` (``U`` ``(out, r)`` = ``up.weight``, ``D`` ``(r, in)`` = ``down.weight``, ``b`` = ``up.bias``).

    Why: the chord logits' ``Linear(p, |V|)`` is most of the sampling recipe's arithmetic (512 x 128
    multiply-adds a frame); through ``r`` units it costs ``r (p + |V|)``, e.g. a third at ``r = 32``.
    """

    def __init__(self, in_features: int, out_features: int, rank: int):
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be positive, got {rank}")
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features)

    @property
    def bias(self) -> nn.Parameter:
        return self.up.bias

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(h))

    @torch.no_grad()
    def set_weight(self, W: torch.Tensor) -> None:
        """``U D`` = the best rank-``r`` approximation of ``W`` ``(out, in)`` in the Frobenius norm (truncated
        SVD, the singular values split evenly between the factors); exact when ``rank(W) <= r``."""
        rank = self.down.weight.shape[0]
        U, S, Vh = torch.linalg.svd(W.double(), full_matrices=False)
        U, S, Vh = U[:, :rank], S[:rank], Vh[:rank]
        root = S.sqrt()
        up = torch.zeros_like(self.up.weight, dtype=torch.float64)
        down = torch.zeros_like(self.down.weight, dtype=torch.float64)
        up[:, : len(S)], down[: len(S)] = U * root, root[:, None] * Vh  # r > min(out, in): the rest stays 0
        self.up.weight.copy_(up)
        self.down.weight.copy_(down)


class ChordVocabNADE(NADEOutput):
    """:class:`NADEOutput` mixed with a softmax over a vocabulary of whole chords (module docstring).

    Extra parameters: ``chord_logits`` (``Linear(state_size, |V|)``: ``z(h)``; with ``rank = r > 0`` a
    :class:`LowRankLinear` through ``r`` units) and ``gate`` (``Linear(state_size, 1)``: ``g(h)``); buffer
    ``chords`` ``(|V|, K)`` uint8. Before :meth:`set_vocabulary` the vocabulary is the empty frame alone; loading
    a state dict adopts the saved vocabulary's size. ``max_chords`` is the configured ``N`` (an upper bound on
    ``|V|``).
    """

    frame_mixture = True

    def __init__(self, state_size: int, n_keys: int, hidden: int, skip: bool = False, max_chords: int = 1,
                 rank: int = 0):
        super().__init__(state_size, n_keys, hidden, skip=skip)
        if max_chords < 1:
            raise ValueError(f"the chord vocabulary needs at least one chord, got {max_chords}")
        if rank < 0:
            raise ValueError(f"the chord logits' rank must be 0 (full) or positive, got {rank}")
        self.max_chords = int(max_chords)
        self.rank = int(rank)
        self.state_size = int(state_size)
        self.gate = nn.Linear(state_size, 1)
        self.register_buffer("hash_weights", _hash_weights(n_keys), persistent=False)
        self._resize(1)
        self.set_vocabulary(np.zeros((1, n_keys), dtype=np.uint8), np.ones(1, dtype=np.int64), 2)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", chords={len(self.chords)}, max_chords={self.max_chords}"
                + (f", rank={self.rank}" if self.rank else ""))

    def prepare(self, pieces: Sequence[np.ndarray]) -> None:
        """Install the ``max_chords`` commonest frames of the training split (:func:`build_vocabulary`)."""
        super().prepare(pieces)
        self.set_vocabulary(*build_vocabulary(pieces, self.max_chords))

    def greedy_choice(self) -> str:
        return "the vocabulary's most probable chord when the gate gives it p >= 0.5, else " + super().greedy_choice()

    # ----------------------------------------------------------------------- the vocabulary
    def _resize(self, size: int) -> None:
        """Fresh ``chords`` ``(size, K)`` and ``chord_logits`` for ``size`` chords (on the current device)."""
        device = self.W.device
        self.register_buffer("chords", torch.zeros(size, self.n_keys, dtype=torch.uint8, device=device))
        logits = LowRankLinear(self.state_size, size, self.rank) if self.rank else nn.Linear(self.state_size, size)
        self.chord_logits = logits.to(device)

    def _index_chords(self) -> None:
        """Sorted frame hashes of the vocabulary (non-persistent buffers), for :meth:`vocab_index`."""
        keys = self.frame_keys(self.chords)
        sorted_keys, order = torch.sort(keys)
        if len(sorted_keys) > 1 and bool((sorted_keys[1:] == sorted_keys[:-1]).any()):
            raise ValueError("two chords of the vocabulary share a hash (or a chord is listed twice)")
        self.register_buffer("_sorted_keys", sorted_keys, persistent=False)
        self.register_buffer("_order", order, persistent=False)
        self.register_buffer("_chord_sizes", self.chords.sum(1, dtype=torch.int64), persistent=False)

    def set_vocabulary(self, chords, counts, frames: int) -> None:
        """Install chords ``(M, K)`` (``1 <= M <= max_chords``, distinct, 0/1) with their training ``counts``
        ``(M,)`` out of ``frames`` training frames, and initialise ``z`` and the gate (module docstring)."""
        chords = torch.as_tensor(np.asarray(chords), dtype=torch.uint8)
        counts = torch.as_tensor(np.asarray(counts), dtype=torch.float64)
        if chords.dim() != 2 or chords.shape[1] != self.n_keys or not 1 <= len(chords) <= self.max_chords:
            raise ValueError(f"chords must be (M, {self.n_keys}) with 1 <= M <= {self.max_chords}, "
                             f"got {tuple(chords.shape)}")
        if counts.shape != (len(chords),) or bool((counts <= 0).any()) or frames < counts.sum():
            raise ValueError("counts must be positive, one per chord, and sum to at most `frames`")
        self._resize(len(chords))  # a fresh map whose logits do not depend on h (LowRankLinear: ``up`` = 0)
        with torch.no_grad():
            (self.chord_logits.up if self.rank else self.chord_logits).weight.zero_()
            self.chords.copy_(chords)
            self.chord_logits.bias.copy_(torch.log(counts / counts.sum()).float())
            coverage = float(counts.sum()) / frames
            start = min(max(coverage / 2, 1e-3), 1 - 1e-3)
            self.gate.weight.zero_()
            self.gate.bias.fill_(math.log(start / (1 - start)))
        self._index_chords()

    def set_chord_logits(self, W: torch.Tensor, b: torch.Tensor) -> None:
        """``z(h) = W h + b``: ``W`` ``(|V|, state_size)`` and ``b`` ``(|V|,)``, e.g. fitted on the LAE's states
        (:func:`lapmusic.model.lae_init.fit_chord_logits`); with a rank ``r``, ``W``'s best rank-``r``
        approximation (:meth:`LowRankLinear.set_weight`)."""
        with torch.no_grad():
            if self.rank:
                self.chord_logits.set_weight(W)
            else:
                self.chord_logits.weight.copy_(W)
            self.chord_logits.bias.copy_(b)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        saved = state_dict.get(prefix + "chords")
        if isinstance(saved, torch.Tensor) and saved.dim() == 2 and saved.shape != self.chords.shape:
            if not 1 <= saved.shape[0] <= self.max_chords:
                error_msgs.append(f"the saved chord vocabulary has {saved.shape[0]} chords, more than "
                                  f"nade_vocab = {self.max_chords}")
            else:
                self._resize(saved.shape[0])  # the saved vocabulary's size decides (it may be below N)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if not error_msgs:
            self._index_chords()

    def frame_keys(self, frames: torch.Tensor) -> torch.Tensor:
        """An integer hash ``(...)`` of frames ``(..., K)``: the sum of fixed random weights of the keys on
        (equal frames, equal keys; :meth:`vocab_index` checks candidates key by key)."""
        return ((frames > 0).long() * self.hash_weights.to(frames.device)).sum(-1)

    def vocab_index(self, frames: torch.Tensor) -> torch.Tensor:
        """Row of ``chords`` equal to each frame ``(..., K)``, or ``-1`` when the frame is not in ``V``: ``(...)``."""
        keys = self.frame_keys(frames)
        flat = keys.reshape(-1)
        position = torch.searchsorted(self._sorted_keys, flat).clamp_(max=len(self._sorted_keys) - 1)
        candidate = self._order[position]
        same = (self._sorted_keys[position] == flat) & (
            self.chords[candidate] == (frames.reshape(-1, self.n_keys) > 0).to(torch.uint8)).all(-1)
        return torch.where(same, candidate, torch.full_like(candidate, -1)).reshape(keys.shape)

    # ----------------------------------------------------------------------- likelihood
    def log_prob(self, states: torch.Tensor, frames: torch.Tensor, inputs: torch.Tensor | None = None,
                 past: torch.Tensor | None = None) -> torch.Tensor:
        """Exact ``log p(x | h)`` ``(...)`` of the mixture for frames ``(..., K)`` (module docstring; ``past`` is
        not read).

        Without gradients it runs in chunks of frames (the ``(N, |V|)`` softmax bounds memory)."""
        lead = frames.shape[:-1]
        s = states.reshape(-1, states.shape[-1])
        v = frames.reshape(-1, self.n_keys)
        x = inputs.reshape(-1, self.n_keys) if self.skip and inputs is not None else None
        return in_chunks(self._log_prob, s, v, x).reshape(lead)

    def _log_prob(self, s: torch.Tensor, v: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        nade = super().log_prob(s, v, x)  # (N,)
        gate = self.gate(s).squeeze(-1)
        index = self.vocab_index(v)
        # The softmax over |V| chords only for the frames in V: the others' chord term is -inf whatever it says.
        rows = (index >= 0).nonzero().squeeze(1)
        log_cat = torch.log_softmax(self.chord_logits(s[rows]), dim=-1)  # (N_in, |V|)
        chord = torch.full_like(gate, -math.inf).index_put((rows,), log_cat.gather(1, index[rows, None]).squeeze(1))
        return torch.logaddexp(nn.functional.logsigmoid(gate) + chord, nn.functional.logsigmoid(-gate) + nade)

    # ----------------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(self, states: torch.Tensor, temperature: float = 1.0, max_polyphony: int | None = None,
               generator: torch.Generator | None = None, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """One frame per state ``(N, p)`` -> ``(N, K)`` uint8 from the mixture (module docstring, "Sampling").

        Random numbers, in this order: the NADE frame of every row (as :meth:`NADEOutput.sample`), one
        uniform per row for the component, one uniform per row for the chord (inverse CDF)."""
        nade_frames = super().sample(states, temperature, max_polyphony, generator, inputs)
        gate = self.gate(states).squeeze(-1)
        logits = self.chord_logits(states)
        if max_polyphony is not None:
            too_big = self._chord_sizes > max_polyphony  # (|V|,)
            logits = logits.masked_fill(too_big, -math.inf)
        allowed = torch.isfinite(logits).any(1)  # rows whose vocabulary is not all masked out
        if temperature == 0.0:
            use_chord = (gate >= 0) & allowed
            choice = logits.argmax(1)
        else:
            uniform = torch.rand(len(gate), generator=generator, device=gate.device, dtype=gate.dtype)
            use_chord = (uniform < torch.sigmoid(gate / temperature)) & allowed
            probs = torch.softmax(logits / temperature, dim=1)
            probs = torch.where(allowed.unsqueeze(1), probs, torch.ones_like(probs))  # any valid row for NaN ones
            # Inverse CDF (one uniform per row): torch.multinomial was a fifth of the recipe's evaluation time.
            # side="right": a uniform never lands on a chord of probability 0.
            cdf = torch.cumsum(probs, 1)
            u = torch.rand(len(gate), 1, generator=generator, device=gate.device, dtype=cdf.dtype)
            choice = torch.searchsorted(cdf, u * cdf[:, -1:], side="right").squeeze(1).clamp_(max=len(cdf[0]) - 1)
        return torch.where(use_chord.unsqueeze(1), self.chords[choice], nade_frames)
