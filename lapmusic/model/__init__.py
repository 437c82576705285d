"""The recurrent network that predicts the next piano-roll frame, and its output layers.

Modules: :mod:`.config` (``ModelConfig``), :mod:`.rnn` (``PianoRollRNN``), :mod:`.head` (the output-layer
interface, Bernoulli head), :mod:`.nade` (RNN-NADE head), :mod:`.chordvocab` (chord-vocabulary mixture),
:mod:`.repeatmix` (copy window), :mod:`.lae_init` (initialisation from an LAE, readout fit), :mod:`.metrics`
(NLL, ACC, baselines).

This package imports none of its modules, so that importing one of them (a worker process, the CLI's early
checks) costs only what that module needs: import each name from its module.
"""
