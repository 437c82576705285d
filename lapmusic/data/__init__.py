"""Polyphonic music as piano rolls: the dataset registry, the benchmark files, the offline Bach set, your own
MIDI files, and piano roll <-> MIDI.

Modules: :mod:`.registry` (``load_dataset``), :mod:`.catalog` (``DATASETS``), :mod:`.dataset` (``Dataset``),
:mod:`.benchmark` (files, downloads, checksums), :mod:`.files` (``.mat``/``.pickle`` readers), :mod:`.bach`,
:mod:`.user` (datasets from MIDI files), :mod:`.midi` (rolls <-> MIDI), :mod:`.midifile` (bounded MIDI reading),
:mod:`.smf` (the MIDI file format, scanned), :mod:`.cache` (datasets loaded once per server process).
"""

from lapmusic.data.catalog import DATASETS
from lapmusic.data.dataset import Dataset
from lapmusic.data.registry import describe_datasets, load_dataset

__all__ = ["DATASETS", "Dataset", "describe_datasets", "load_dataset"]
