"""The recurrent network of the paper and its initialisation from a linear autoencoder (LAE).

An Elman RNN reads piano-roll frames ``x_1 .. x_t`` (88 keys) and predicts frame ``x_{t+1}``:

    h_t      = tanh(W_in x_t + W_rec h_{t-1} + b)          (p hidden units)
    logits_t = W_out h_t + c                               (one independent sigmoid per key)

GRU and LSTM cells are available as random-init baselines. With ``output="nade"`` the independent sigmoids
are replaced by a NADE over the keys of frame ``t+1`` whose biases are linear in ``h_t`` (RNN-NADE,
:mod:`lapmusic.model.nade`); ``W_out h_t + c`` is then NADE's visible-bias map.

LAE initialisation (Pasa & Sperduti, 2014): the LAE's state ``y_t = A x_t + B y_{t-1}`` compresses the
whole prefix. Setting ``W_in = alpha * A`` and ``W_rec = B`` gives pre-activations ``alpha * y_t`` (because the
recursion is linear, scaling the input scales every state), so with a small ``alpha`` the tanh is almost
linear and ``h_t ~= alpha * y_t``: the RNN starts out computing the LAE's states. The readout is then fitted
to the next frame on those states (see :func:`fit_readout`).
"""

from __future__ import annotations

import torch
from torch import nn

from lapmusic import N_KEYS

CELLS = ("rnn", "gru", "lstm")
OUTPUTS = ("bernoulli", "nade")


class PianoRollRNN(nn.Module):
    """88 inputs -> ``hidden`` recurrent units -> 88 logits (frame ``t+1`` from frames ``<= t``).

    ``forward(x, h=None)`` takes ``x`` of shape ``(B, T, 88)`` (float 0/1) and returns
    ``(logits, h)``: ``logits`` ``(B, T, 88)`` where ``logits[:, t]`` scores frame ``t+1``, and ``h`` the
    final recurrent state, to pass back in to continue the same sequences (a tensor ``(1, B, hidden)``,
    or a pair of them for ``cell="lstm"``). Sampling one step at a time is ``forward(x[:, None, :], h)``.

    ``output="nade"``: ``self.nade`` is a :class:`lapmusic.nade.NADEOutput` with ``nade_hidden`` units and
    ``forward(x, h, targets)`` needs the frames being predicted (``targets`` ``(B, T, 88)``, i.e. ``x``
    shifted by one): ``logits[:, t, k]`` is then the conditional logit of key ``k`` of frame ``t+1`` given
    its lower keys and ``h_t``, so that ``sum_k BCE(logits, targets)`` is the exact NLL for both outputs.
    ``output="bernoulli"`` ignores ``targets``; ``self.nade`` is ``None``.

    ``nade_skip=True`` (NADE output only): the NADE's biases at step ``t`` also get a linear term in the frame
    ``x_t`` just read, ``b = W_bs h_t + W_bx x_t + b_0``, ``c = W_cs h_t + W_cx x_t + c_0`` (zero-initialised
    ``W_bx``, ``W_cx``; :mod:`lapmusic.model.nade`, "Previous-frame skip"); ``forward`` passes ``x`` on.

    ``readout_skip=True`` (Bernoulli output only): the logits also get a linear term in the frame ``x_t`` just
    read, ``logits_t = W_out h_t + c + W_skip x_t`` (``self.skip``, ``W_skip`` ``(88, 88)``, no bias,
    zero-initialised so the network starts as the plain one). "Copy the previous frame" and key-to-key
    transitions are then first-order features instead of something the hidden units must carry next to
    the history. Off, there is no ``skip`` module: the state dict has the plain network's keys.

    ``nade_vocab=N > 0`` (NADE output only): ``self.nade`` is a :class:`lapmusic.chordvocab.ChordVocabNADE`, the
    NADE mixed with a softmax over at most ``N`` whole chords (install them with its ``set_vocabulary``). Its
    NLL is no longer a sum of per-key BCEs: use :meth:`frame_nll` (``forward`` then refuses ``targets``).

    ``nade_repeat=True`` (NADE output only): the output (with or without the vocabulary) is mixed with "copy the
    frame just read", ``r(h) 1[x = x_t] + (1 - r(h)) q(x)`` (:mod:`lapmusic.model.repeatmix`); its NLL also needs
    :meth:`frame_nll`.
    ``nade_repeat_window=L > 1`` (with ``nade_repeat``): the copy chooses among the last ``L`` frames read, a
    pointer mixture ``r(h) sum_k w_k(h) 1[x = x_{t-k+1}] + (1 - r(h)) q(x)``; :meth:`frame_nll` then takes the
    frames read before a BPTT window (``past``) so that the likelihood does not depend on the window cuts.
    """

    def __init__(self, hidden: int, cell: str = "rnn", dropout: float = 0.0, n_keys: int = N_KEYS,
                 output: str = "bernoulli", nade_hidden: int = 64, nade_skip: bool = False,
                 readout_skip: bool = False, nade_vocab: int = 0, nade_repeat: bool = False,
                 nade_repeat_window: int = 1):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if nade_skip and output != "nade":
            raise ValueError("nade_skip needs output='nade'")
        if nade_vocab and output != "nade":
            raise ValueError("nade_vocab needs output='nade'")
        if nade_repeat and output != "nade":
            raise ValueError("nade_repeat needs output='nade'")
        if nade_repeat_window != 1 and not nade_repeat:
            raise ValueError("nade_repeat_window needs nade_repeat")
        if readout_skip and output != "bernoulli":
            raise ValueError("readout_skip needs output='bernoulli' (the NADE has its own: nade_skip)")
        if hidden < 1:
            raise ValueError(f"hidden must be a positive integer, got {hidden}")
        self.hidden = int(hidden)
        self.cell = cell
        self.n_keys = int(n_keys)
        self.dropout_rate = float(dropout)
        self.output = output
        self.nade_vocab = int(nade_vocab)
        self.nade_repeat = bool(nade_repeat)
        self.repeat_window = int(nade_repeat_window)
        if cell == "rnn":
            self.recurrent = nn.RNN(n_keys, hidden, nonlinearity="tanh", batch_first=True)
        elif cell == "gru":
            self.recurrent = nn.GRU(n_keys, hidden, batch_first=True)
        else:
            self.recurrent = nn.LSTM(n_keys, hidden, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.nade = None
        if output == "nade":
            from lapmusic.model.chordvocab import ChordVocabNADE
            from lapmusic.model.nade import NADEOutput
            from lapmusic.model.repeatmix import RepeatChordVocabNADE, RepeatNADE

            vocab_class = RepeatChordVocabNADE if nade_repeat else ChordVocabNADE
            nade_class = RepeatNADE if nade_repeat else NADEOutput
            extra = {"window": self.repeat_window} if nade_repeat else {}
            if nade_vocab:
                self.nade = vocab_class(hidden, n_keys, nade_hidden, skip=nade_skip, max_chords=nade_vocab, **extra)
            else:
                self.nade = nade_class(hidden, n_keys, nade_hidden, skip=nade_skip, **extra)
        else:
            self.readout = nn.Linear(hidden, n_keys)
        self.skip = None
        if readout_skip:
            with torch.random.fork_rng(devices=[]):  # draws nothing: the other weights and later draws
                self.skip = nn.Linear(n_keys, n_keys, bias=False)  # match the plain network's
            nn.init.zeros_(self.skip.weight)

    def forward(self, x: torch.Tensor, h=None, targets: torch.Tensor | None = None):
        states, h = self.recurrent(x, h)
        if self.nade is None:
            logits = self.readout(self.dropout(states))
            if self.skip is not None:
                logits = logits + self.skip(x)
            return logits, h
        if targets is None:
            raise ValueError("a NADE output scores given frames: pass targets (B, T, 88), or sample with "
                             "lapmusic.sampling.sample.generate")
        if self.frame_mixture:
            raise ValueError("a chord-vocabulary or repeat NADE has no per-key logits whose BCE sum is its NLL: "
                             "use frame_nll")
        return self.nade.conditional_logits(self.dropout(states), targets, inputs=x), h

    @property
    def vocab(self) -> bool:
        """Whether the output is the chord-vocabulary mixture (``nade_vocab > 0``)."""
        return self.nade_vocab > 0

    @property
    def frame_mixture(self) -> bool:
        """Whether the NADE output is a mixture over whole frames (chord vocabulary and/or repeat component),
        whose NLL is :meth:`frame_nll`'s and not a sum of per-key BCEs."""
        return self.nade_vocab > 0 or self.nade_repeat

    def frame_nll(self, x: torch.Tensor, h=None, targets: torch.Tensor | None = None,
                  past: torch.Tensor | None = None):
        """``(nll (B, T), h)``: the exact NLL in nats of each target frame ``(B, T, 88)`` given ``x`` ``(B, T, 88)``.

        Bernoulli: ``sum_k BCE(logits, targets)`` of :meth:`forward`; NADE (with or without the chord
        vocabulary and the repeat component): ``-log p(x | h)`` of its ``log_prob``, the same sum of conditional BCEs for the plain NADE.
        Dropout as in ``forward``. ``past`` ``(B, P, 88)``: the (up to ``repeat_window - 1``) frames read just
        before ``x`` in the same pieces (``None``: ``x`` starts the pieces); only a repeat window reads it.
        """
        if self.nade is None:
            logits, h = self(x, h, targets=targets)  # (forward ignores targets here; subclasses may look)
            per_key = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
            return per_key.sum(-1), h
        states, h = self.recurrent(x, h)
        return -self.output_log_prob(self.dropout(states), targets, x, past), h

    def output_log_prob(self, states: torch.Tensor, targets: torch.Tensor, x: torch.Tensor,
                        past: torch.Tensor | None = None) -> torch.Tensor:
        """NADE output: ``log p(target frame | state, frames read)`` ``(B, T)`` for states ``(B, T, p)``, targets
        and frames read ``x`` ``(B, T, 88)``; ``past`` (:meth:`frames_before`) is read by a repeat window only."""
        if self.repeat_window > 1:
            return self.nade.log_prob(states, targets, inputs=x, past=past)
        return self.nade.log_prob(states, targets, inputs=x)

    def frames_before(self, inputs: torch.Tensor, start: int) -> torch.Tensor | None:
        """The frames of ``inputs`` ``(B, T, 88)`` read just before step ``start`` that a repeat window looks
        back to, ``(B, <= L - 1, 88)``; ``None`` without a window (``L = 1``)."""
        if self.repeat_window == 1:
            return None
        return inputs[:, max(0, start - self.repeat_window + 1) : start]

    def hidden_states(self, x: torch.Tensor, h=None):
        """``(B, T, hidden)`` states (before dropout) and the final state."""
        return self.recurrent(x, h)

    def extra_repr(self) -> str:
        skip = ", readout_skip=True" if self.skip is not None else ""
        return (f"hidden={self.hidden}, cell={self.cell!r}, dropout={self.dropout_rate}, "
                f"output={self.output!r}{skip}")


