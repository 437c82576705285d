"""lapmusic: pre-training recurrent networks on polyphonic music via linear autoencoders.

A reproduction (and an app) of Pasa & Sperduti, "Pre-training of Recurrent Neural Networks via
Linear Autoencoders", NIPS 2014.
"""

__version__ = "0.1.0"

N_KEYS = 88
"""Piano-roll width: column k is MIDI pitch ``LOWEST_PITCH + k`` (A0 .. C8)."""

LOWEST_PITCH = 21
HIGHEST_PITCH = LOWEST_PITCH + N_KEYS - 1
