"""The recurrent network that predicts the next piano-roll frame, and its output layers.

Modules: :mod:`.config` (``ModelConfig``), :mod:`.rnn` (``PianoRollRNN``), :mod:`.head` (the output-layer
interface, Bernoulli head), :mod:`.nade` (RNN-NADE head), :mod:`.chordvocab` (chord-vocabulary mixture),
:mod:`.repeatmix` (copy window), :mod:`.lae_init` (initialisation from an LAE, readout fit), :mod:`.metrics`
(NLL, ACC, baselines).
"""

from lapmusic.model.config import ModelConfig
from lapmusic.model.rnn import PianoRollRNN

__all__ = ["ModelConfig", "PianoRollRNN"]
