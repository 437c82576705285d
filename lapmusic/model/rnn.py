"""The recurrent network of the paper: an RNN over piano-roll frames with an output layer ("head") on top.

An Elman RNN reads piano-roll frames ``x_1 .. x_t`` (88 keys) and predicts frame ``x_{t+1}``:

    h_t      = tanh(W_in x_t + W_rec h_{t-1} + b)          (p hidden units)
    logits_t = W_out h_t + c                               (one independent sigmoid per key)

GRU and LSTM cells are available as random-init baselines. The head turns ``h_t`` into the distribution of
frame ``t+1`` (:mod:`lapmusic.model.head`): the independent sigmoids above, or a NADE over the keys of the
frame whose biases are linear in ``h_t`` (RNN-NADE, :mod:`lapmusic.model.nade`), alone or mixed with a chord
vocabulary (:mod:`lapmusic.model.chordvocab`) and a copy of recent frames (:mod:`lapmusic.model.repeatmix`).

LAE initialisation (Pasa & Sperduti, 2014; :mod:`lapmusic.model.lae_init`): the LAE's state
``y_t = A x_t + B y_{t-1}`` compresses the whole prefix. Setting ``W_in = alpha * A`` and ``W_rec = B`` gives
pre-activations ``alpha * y_t`` (the recursion is linear, so scaling the input scales every state); with a
small ``alpha`` the tanh is almost linear and ``h_t ~= alpha * y_t``: the RNN starts out computing the LAE's
states, and the readout is then fitted to the next frame on those states.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from lapmusic import N_KEYS
from lapmusic.model.chordvocab import ChordVocabNADE
from lapmusic.model.config import ModelConfig
from lapmusic.model.elman import elman_states
from lapmusic.model.head import BernoulliHead, OutputHead
from lapmusic.model.nade import NADEOutput
from lapmusic.model.repeatmix import RepeatChordVocabNADE, RepeatNADE

_CELLS = {"rnn": lambda keys, hidden: nn.RNN(keys, hidden, nonlinearity="tanh", batch_first=True),
          "gru": lambda keys, hidden: nn.GRU(keys, hidden, batch_first=True),
          "lstm": lambda keys, hidden: nn.LSTM(keys, hidden, batch_first=True)}
_CELL_NAMES = {"RNN_TANH": "rnn", "GRU": "gru", "LSTM": "lstm"}
# (chord vocabulary, repeat component) -> the NADE head that mixes them in
_NADE_HEADS = {(False, False): NADEOutput, (True, False): ChordVocabNADE, (False, True): RepeatNADE,
               (True, True): RepeatChordVocabNADE}
# Run folders saved before the heads shared one name keep their weights under these prefixes.
_LEGACY_PREFIXES = (("readout.", "head.readout."), ("skip.", "head.skip."), ("nade.", "head."))


def _current_key(key: str) -> str:
    for old, new in _LEGACY_PREFIXES:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def build_head(config: ModelConfig, n_keys: int = N_KEYS) -> OutputHead:
    """The output layer ``config`` asks for, for states of ``config.hidden`` units.

    Parameters
    ----------
    config : ModelConfig
        A valid config (:meth:`ModelConfig.validate`).
    n_keys : int
        Keys per frame.

    Returns
    -------
    OutputHead
        :class:`BernoulliHead` (with the readout skip when asked), or the NADE head with the chord
        vocabulary and/or the copy component mixed in.
    """
    if config.output == "bernoulli":
        return BernoulliHead(config.hidden, n_keys, skip=config.readout_skip)
    options = {"skip": config.nade_skip}
    if config.nade_vocab:
        options["max_chords"] = config.nade_vocab
        options["rank"] = config.nade_vocab_rank
    if config.nade_repeat:
        options["window"] = config.nade_repeat_window
    head_class = _NADE_HEADS[bool(config.nade_vocab), config.nade_repeat]
    return head_class(config.hidden, n_keys, config.nade_hidden, **options)


class PianoRollRNN(nn.Module):
    """A recurrent layer over 88-key frames, dropout on its states, and an output head.

    Build the variants of :class:`ModelConfig` with :meth:`from_config`; the constructor takes the parts.

    Parameters
    ----------
    recurrent : torch.nn.RNN, GRU or LSTM
        ``batch_first``, one layer, ``input_size`` keys.
    head : OutputHead
        The output layer over ``recurrent.hidden_size`` state units.
    dropout : float
        Dropout rate on the recurrent states before the head.

    Attributes
    ----------
    recurrent, dropout, head : torch.nn.Module
        The parts; the state dict's keys are ``recurrent.*`` and ``head.*``.
    hidden, n_keys : int
        State units ``p`` and keys per frame.
    cell : {"rnn", "gru", "lstm"}
        The recurrent cell.
    hand_written_steps : bool
        True (the default): on the CPU the tanh cell runs :func:`lapmusic.model.elman.elman_states` (the same
        function, 1.1-1.7 times the training throughput); False: ``torch.nn.RNN`` itself, as reference code runs
        it (the throughput benchmark's reference loop). GRU, LSTM and CUDA always run ``torch.nn`` (cuDNN).
    """

    def __init__(self, recurrent: nn.RNNBase, head: OutputHead, dropout: float = 0.0):
        super().__init__()
        self.recurrent = recurrent
        self.hand_written_steps = True
        self.dropout = nn.Dropout(dropout)
        self.head = head

    @classmethod
    def from_config(cls, config: ModelConfig, n_keys: int = N_KEYS) -> "PianoRollRNN":
        """The network ``config`` describes, with PyTorch's default random initialisation.

        Parameters
        ----------
        config : ModelConfig
            Cell, sizes, dropout and output layer.
        n_keys : int
            Keys per frame (88 for piano rolls).

        Returns
        -------
        PianoRollRNN
            In training mode, on the CPU. The weights are drawn from torch's global generator, recurrent
            layer first: the same seed gives the same network.

        Raises
        ------
        LapMusicError
            When a field is out of its range or the combination makes no network (e.g. ``nade_vocab``
            without ``output="nade"``), with every problem named.
        """
        config.validate()
        recurrent = _CELLS[config.cell](n_keys, config.hidden)
        return cls(recurrent, build_head(config, n_keys), dropout=config.dropout)

    @property
    def hidden(self) -> int:
        return self.recurrent.hidden_size

    @property
    def n_keys(self) -> int:
        return self.recurrent.input_size

    @property
    def cell(self) -> str:
        return _CELL_NAMES[self.recurrent.mode]

    def forward(self, x: torch.Tensor, h=None, targets: torch.Tensor | None = None):
        """Per-key logits of the next frames.

        Parameters
        ----------
        x : Tensor of shape (B, T, 88)
            The frames read (float 0/1).
        h : Tensor of shape (1, B, p), a pair of them (LSTM), or None
            The recurrent state to continue from (``None``: zeros). Sampling one step at a time is
            ``forward(x[:, None, :], h)``.
        targets : Tensor of shape (B, T, 88), optional
            The frames predicted (``x`` shifted by one). The NADE needs them: its logit of key ``k`` is
            conditioned on the keys below ``k`` of the frame it scores; the Bernoulli head ignores them.

        Returns
        -------
        logits : Tensor of shape (B, T, 88)
            ``logits[:, t]`` scores frame ``t + 1``: ``sum_k BCE(logits, targets)`` is the exact NLL.
        h : Tensor or tuple of Tensor
            The final recurrent state, to pass back in to continue the same sequences.

        Raises
        ------
        ValueError
            A NADE head without ``targets``, or a frame mixture (chord vocabulary, copy component), which has
            no per-key logits: use :meth:`frame_nll`.
        """
        states, h = self.hidden_states(x, h)
        return self.head.key_logits(self.dropout(states), x, targets), h

    def frame_nll(self, x: torch.Tensor, h=None, targets: torch.Tensor | None = None,
                  past: torch.Tensor | None = None):
        """The exact NLL of every target frame, for any head.

        Parameters
        ----------
        x, h
            As in :meth:`forward` (dropout too).
        targets : Tensor of shape (B, T, 88)
            The frames predicted.
        past : Tensor of shape (B, P, 88), optional
            The frames read just before ``x`` in the same pieces that a copy window looks back to
            (``head.frames_before``); ``None``: ``x`` starts the pieces.

        Returns
        -------
        nll : Tensor of shape (B, T)
            ``-log p(target frame | frames read)`` in nats.
        h : Tensor or tuple of Tensor
            The final recurrent state.
        """
        states, h = self.hidden_states(x, h)
        return -self.head.log_prob(self.dropout(states), targets, x, past), h

    def hidden_states(self, x: torch.Tensor, h=None):
        """``(B, T, hidden)`` states (before dropout) and the final state."""
        if self.hand_written_steps and x.device.type == "cpu" and self.recurrent.mode == "RNN_TANH":
            return elman_states(self.recurrent, x, h)
        return self.recurrent(x, h)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """:meth:`torch.nn.Module.load_state_dict`, also for the weights of older run folders (saved with
        ``readout.*``, ``skip.*`` or ``nade.*`` where the head's weights are now ``head.*``)."""
        if any(_current_key(key) != key for key in state_dict):
            metadata = getattr(state_dict, "_metadata", None)
            state_dict = OrderedDict((_current_key(key), value) for key, value in state_dict.items())
            if metadata is not None:  # per-module versions, keyed by module path
                state_dict._metadata = OrderedDict((_current_key(key + ".")[:-1], value)
                                                   for key, value in metadata.items())
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, cell={self.cell!r}, dropout={self.dropout.p}"
