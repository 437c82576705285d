"""Polyphonic music as piano rolls: the dataset registry, the benchmark files, the offline Bach set, your own
MIDI files, and piano roll <-> MIDI.

Modules: :mod:`.registry` (``load_dataset``), :mod:`.catalog` (``DATASETS``), :mod:`.dataset` (``Dataset``),
:mod:`.benchmark` (files, downloads, checksums), :mod:`.files` (``.mat``/``.pickle`` readers), :mod:`.bach`,
:mod:`.user` (datasets from MIDI files), :mod:`.roll` (``check_roll``), :mod:`.midi` (rolls <-> MIDI), :mod:`.midifile` (bounded MIDI reading),
:mod:`.smf` (the MIDI file format, scanned), :mod:`.cache` (datasets loaded once per server process).

This package imports none of its modules, so that importing one of them (a worker process, the CLI's early
checks) costs only what that module needs: import each name from its module.
"""
