"""Primers: silence, chords by MIDI number or note name, held chords, dataset pieces, and each mistake named."""

from __future__ import annotations

import numpy as np
import pytest

from lapmusic.core.errors import LapMusicError
from lapmusic.sampling.primer import parse_primer


class FakeDataset:
    key = "fake"

    def __init__(self):
        rng = np.random.default_rng(0)
        self.train = [(rng.random((20, 88)) < 0.1).astype(np.uint8) for _ in range(3)]
        self.valid = [np.ones((5, 88), dtype=np.uint8)]
        self.test = []

    def split(self, name):
        return getattr(self, name)


def test_parse_primer_none_and_chords():
    assert parse_primer("none", None) is None
    assert parse_primer("", "jsb") is None
    chord = parse_primer("chord:60,64,67", None)
    assert chord.shape == (1, 88) and chord.dtype == np.uint8
    assert list(np.flatnonzero(chord[0]) + 21) == [60, 64, 67]
    named = parse_primer("chord:C4,E4,G4", None)
    assert np.array_equal(named, chord)
    assert list(np.flatnonzero(parse_primer("chord:A0,C8,Bb3,F#3", None)[0]) + 21) == [21, 54, 58, 108]
    held = parse_primer("chord:60,64,67:4", None)
    assert held.shape == (4, 88) and np.array_equal(held, np.tile(chord, (4, 1)))


def test_parse_primer_from_dataset_piece():
    ds = FakeDataset()
    roll = parse_primer("train:2:7", "fake", dataset=ds)
    assert np.array_equal(roll, ds.train[2][:7])
    assert parse_primer("valid:0:5", "fake", dataset=ds).shape == (5, 88)


@pytest.mark.parametrize(
    "spec, words",
    [
        ("train:3:4", "has 3 pieces"),
        ("test:0:4", "has 0 pieces"),
        ("train:0:21", "only 20 frames"),
        ("train:-1:4", "at least 0"),
        ("train:0:0", "at least 1"),
        ("train:x:4", "not a whole number"),
        ("bogus:0:4", "not understood"),
        ("train:0", "not understood"),
        ("chord:", "no pitches"),
        ("chord:20", "off the 88-key piano"),
        ("chord:109", "off the 88-key piano"),
        ("chord:H4", "note name"),
        ("chord:60:0", "at least 1"),
    ],
)
def test_parse_primer_errors(spec, words):
    with pytest.raises(LapMusicError, match=words):
        parse_primer(spec, "fake", dataset=FakeDataset())


def test_parse_primer_piece_needs_a_dataset():
    with pytest.raises(LapMusicError, match="needs a dataset"):
        parse_primer("train:0:4", None)
