"""The recurrent network that predicts the next piano-roll frame, and its output layers.

Modules: :mod:`.rnn` (``PianoRollRNN``), :mod:`.lae_init` (initialisation from an LAE, readout fit),
:mod:`.nade` (RNN-NADE output), :mod:`.chordvocab` (chord-vocabulary mixture), :mod:`.repeatmix` (copy window),
:mod:`.metrics` (NLL, ACC, baselines).
"""

from lapmusic.model.rnn import PianoRollRNN

__all__ = ["PianoRollRNN"]
