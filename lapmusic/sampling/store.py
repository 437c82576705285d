"""Samples kept in their run folder: generate once, play and download again later.

Layout, next to the run's checkpoints (see ``docs/reference.md``)::

    RUNDIR/samples/<name>.json   what made it: seed, primer, temperature, steps, max polyphony, the model's
                                 epoch and checkpoint, step seconds, time, notes, audio renderer
    RUNDIR/samples/<name>.mid    the MIDI file (primer and continuation)
    RUNDIR/samples/<name>.npz    the piano roll, ``roll`` ``(primer_frames + steps, 88)`` uint8
    RUNDIR/samples/<name>.wav    the rendered audio, when it was rendered

Every file is written atomically and the ``.json`` last, so a sample is listed only once it is complete
(a crash mid-save leaves at most unlisted files behind). Names: :func:`new_sample_name`.

A *comparison* is the LAE run and the random run trained with the same settings (the app's "both",
``lapmusic compare``): :func:`comparison_partner` finds one run's partner, so both can be sampled with the
same seed, primer and temperature (:func:`lapmusic.sampling.compose.sample_to_run`).
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from lapmusic import N_KEYS
from lapmusic.core.errors import LapMusicError
from lapmusic.core.io import atomic_save, atomic_write_bytes, atomic_write_json, read_json

SAMPLES_DIR = "samples"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")

# Config keys that may differ within a comparison: the init and the settings only the LAE init reads.
_INIT_ONLY_KEYS = frozenset(
    {"init", "lae_solver", "lae_max_lag", "lae_path", "alpha", "alpha_target", "lae_max_radius",
     "readout_steps", "readout_max_frames", "lae_init", "lae_recipe"}
)


@dataclass
class SavedSample:
    """One sample on disk; the roll and the audio are read when asked for.

    Attributes
    ----------
    run_dir : pathlib.Path
        The run folder holding ``samples/``.
    name : str
        The files' stem.
    meta : dict
        The ``.json`` record: what made the sample, plus ``name``, ``created``, ``frames`` and ``files``.
    """

    run_dir: Path
    name: str
    meta: dict = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.run_dir / SAMPLES_DIR

    @property
    def midi_path(self) -> Path:
        return self.folder / f"{self.name}.mid"

    @property
    def wav_path(self) -> Path:
        return self.folder / f"{self.name}.wav"

    @property
    def roll_path(self) -> Path:
        return self.folder / f"{self.name}.npz"

    @property
    def has_wav(self) -> bool:
        return self.wav_path.is_file()

    def midi_bytes(self) -> bytes:
        """The MIDI file's bytes; LapMusicError when it cannot be read."""
        return _read_bytes(self.midi_path, "MIDI file")

    def wav_bytes(self) -> bytes | None:
        """The WAV file's bytes, or None when the sample was saved without audio."""
        return _read_bytes(self.wav_path, "WAV file") if self.has_wav else None

    def roll(self) -> np.ndarray:
        """The ``(frames, 88)`` uint8 0/1 piano roll, primer first; LapMusicError when unreadable."""
        try:
            with np.load(self.roll_path, allow_pickle=False) as data:
                roll = np.asarray(data["roll"])
        except (OSError, KeyError, ValueError) as exc:
            raise LapMusicError(
                f"sample {self.name} of {self.run_dir.name}: its piano roll {self.roll_path.name} could not be read "
                f"({type(exc).__name__}); generate it again"
            ) from None
        if roll.ndim != 2 or roll.shape[1] != N_KEYS:
            raise LapMusicError(f"sample {self.name}: its piano roll has shape {roll.shape}, expected (frames, {N_KEYS})")
        return (roll > 0).astype(np.uint8)

    @property
    def label(self) -> str:
        """``seed 3 · T 1 · chord:C4,E4,G4:2 · 64 frames · 10:21:05`` for lists."""
        m = self.meta
        when = m.get("created")
        clock = datetime.fromtimestamp(when).strftime("%Y-%m-%d %H:%M:%S") if isinstance(when, (int, float)) else "?"
        return (f"seed {m.get('seed', '?')} · T {m.get('temperature', '?')} · {m.get('primer', 'none')} · "
                f"{m.get('steps', '?')} frames · {clock}")


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise LapMusicError(f"the {what} {path} could not be read ({exc.strerror or type(exc).__name__})") from None


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise LapMusicError(f"{name!r} is not a sample name (letters, digits, '-', '_', '.')")
    return name


def new_sample_name(seed: int | None, temperature: float, *, now: float | None = None) -> str:
    """A new sample name ``20261127-101500-seed3-t1-1a2b``: sortable by time, says seed and temperature.

    Parameters
    ----------
    seed : int or None
        The sampling seed (``seedNone`` when None).
    temperature : float
        The sampling temperature.
    now : float, optional
        Unix time of the stamp (default: now).

    Returns
    -------
    str
        The name, unique by four random hex digits.
    """
    stamp = datetime.fromtimestamp(now if now is not None else time.time()).strftime("%Y%m%d-%H%M%S")
    seed_part = f"seed{seed}" if seed is not None else "seedNone"
    name = f"{stamp}-{seed_part}-t{float(temperature):g}-{uuid.uuid4().hex[:4]}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


# ------------------------------------------------------------------------------------- save / list / load
def save_sample(
    run_dir: str | Path,
    roll: np.ndarray,
    *,
    midi: bytes,
    wav: bytes | None = None,
    meta: Mapping[str, Any],
    name: str | None = None,
) -> SavedSample:
    """Write one sample into ``RUNDIR/samples/``: ``.mid``, ``.npz``, ``.wav`` when given, ``.json`` last.

    Parameters
    ----------
    run_dir : str or os.PathLike
        An existing run folder.
    roll : array-like of shape (frames, 88)
        0/1 piano roll, primer first.
    midi : bytes
        The MIDI file's bytes (:func:`lapmusic.data.midi.midi_to_bytes`); they start with ``MThd``.
    wav : bytes, optional
        The WAV file's bytes (they start with ``RIFF``), or None when audio was not rendered.
    meta : mapping
        What made the sample (seed, primer, temperature, steps, ...), JSON-serialisable; stored as given
        plus ``name``, ``created`` (Unix time), ``frames`` and ``files``.
    name : str, optional
        The file stem (default: :func:`new_sample_name` of ``meta["seed"]`` and ``meta["temperature"]``).

    Returns
    -------
    SavedSample

    Raises
    ------
    LapMusicError
        The run folder is missing, the roll or the bytes are not what they should be, the name is not
        a safe file stem or is taken.
    lapmusic.core.io.StorageError
        A file could not be written (disk full, permission, read-only).
    """
    from lapmusic.data.roll import check_roll

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LapMusicError(f"run folder {run_dir} does not exist; cannot save a sample there")
    roll = check_roll(roll, "sample")
    if not isinstance(midi, (bytes, bytearray)) or bytes(midi[:4]) != b"MThd":
        raise LapMusicError("save_sample needs the MIDI file's bytes (they start with 'MThd')")
    if wav is not None and bytes(wav[:4]) != b"RIFF":
        raise LapMusicError("save_sample: wav must be a WAV file's bytes (they start with 'RIFF') or None")
    name = _check_name(name or new_sample_name(meta.get("seed"), float(meta.get("temperature", 1.0))))
    folder = run_dir / SAMPLES_DIR
    if (folder / f"{name}.json").exists():
        raise LapMusicError(f"a sample named {name} already exists in {run_dir.name}")
    atomic_write_bytes(folder / f"{name}.mid", bytes(midi))
    atomic_save(folder / f"{name}.npz", lambda handle: np.savez_compressed(handle, roll=roll.astype(np.uint8)))
    files = ["mid", "npz"]
    if wav is not None:
        atomic_write_bytes(folder / f"{name}.wav", bytes(wav))
        files.append("wav")
    record = {**dict(meta), "name": name, "created": time.time(), "frames": int(roll.shape[0]), "files": files}
    atomic_write_json(folder / f"{name}.json", record)  # last: the sample is listed from now on
    return SavedSample(run_dir, name, record)


def list_samples(run_dir: str | Path) -> list[SavedSample]:
    """The complete samples of a run: those with a readable ``.json`` and their ``.mid``.

    Parameters
    ----------
    run_dir : str or os.PathLike
        A run folder (it may lack ``samples/``).

    Returns
    -------
    list of SavedSample
        Newest first; ``[]`` when none. Half-written or foreign files are skipped, never fatal.
    """
    folder = Path(run_dir) / SAMPLES_DIR
    try:
        candidates = [p for p in folder.iterdir() if p.suffix == ".json" and not p.name.startswith(".")]
    except OSError:
        return []
    found = []
    for path in candidates:
        name = path.stem
        if not _NAME.match(name):
            continue
        meta = read_json(path)
        if meta is None or not (folder / f"{name}.mid").is_file():
            continue  # half-written or foreign: never fatal for a listing
        found.append(SavedSample(Path(run_dir), name, meta))
    return sorted(found, key=lambda s: (_created(s.meta), s.name), reverse=True)


def _created(meta: dict) -> float:
    value = meta.get("created")
    return float(value) if isinstance(value, (int, float)) else 0.0


def load_sample(run_dir: str | Path, name: str) -> SavedSample:
    """One saved sample by name.

    Parameters
    ----------
    run_dir : str or os.PathLike
        The run folder.
    name : str
        The sample's name (its file stem).

    Returns
    -------
    SavedSample

    Raises
    ------
    LapMusicError
        ``name`` is not a sample name, or the sample does not exist or its ``.json`` is unreadable.
    """
    name = _check_name(name)
    path = Path(run_dir) / SAMPLES_DIR / f"{name}.json"
    meta = read_json(path)
    if meta is None:
        raise LapMusicError(f"run {Path(run_dir).name} has no sample named {name} (or its {path.name} is unreadable)")
    return SavedSample(Path(run_dir), name, meta)


# ------------------------------------------------------------------------------------- comparisons
def _comparison_key(config: Mapping[str, Any]) -> tuple:
    """What two runs of one comparison share: the config without the init and init-only settings."""
    return tuple(sorted((k, repr(v)) for k, v in config.items() if k not in _INIT_ONLY_KEYS))


def comparison_partner(config: Mapping[str, Any], candidates: Iterable[tuple[Any, Mapping[str, Any]]]):
    """The first candidate trained with the same settings but the other init (``lae`` <-> ``random``).

    Two runs pair when their configs are equal but for the init and the settings only the LAE init reads.

    Parameters
    ----------
    config : mapping
        One run's ``config.json``.
    candidates : iterable of (item, mapping)
        ``(item, config)`` pairs, best first (e.g. newest first); ``item`` is anything, e.g. a run folder.

    Returns
    -------
    object or None
        The first partner's ``item``, or None (also for an init other than ``lae`` and ``random``).
    """
    init = config.get("init")
    other = {"lae": "random", "random": "lae"}.get(str(init))
    if other is None:
        return None
    key = _comparison_key(config)
    for item, candidate in candidates:
        if candidate.get("init") == other and _comparison_key(candidate) == key:
            return item
    return None
