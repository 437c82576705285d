"""What every ``lapmusic`` subcommand shares: the progress line, ``--json`` output, the early checks of
names and paths (before torch is imported), and the argparse value types."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable

from lapmusic.core.errors import LapMusicError

DATASET_HELP = "dataset key: jsb, nottingham, musedata, pianomidi, bach (offline), or user:NAME"


class ProgressLine:
    """A one-line progress display on stderr: ``[ 42%] message``, redrawn in place on a terminal.

    Off a terminal (pipes, CI logs) it prints a new line at most every ``min_interval`` seconds.
    """

    def __init__(self, stream=None, min_interval: float = 1.0):
        self.stream = stream if stream is not None else sys.stderr
        self.min_interval = min_interval
        self._last = 0.0
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._open = False

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        done = fraction >= 1.0
        if not self._tty and not done and now - self._last < self.min_interval:
            return
        self._last = now
        line = f"[{100 * max(0.0, min(1.0, fraction)):3.0f}%] {message}"
        if self._tty:
            self.stream.write("\r\033[K" + line)
            self._open = not done
            if done:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End an open terminal line, so that what follows starts on a line of its own."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def emit(result: dict, as_json: bool, human: Callable[[dict], str] | None = None) -> None:
    """Print ``result`` as one JSON line (``--json``) or as human text."""
    if as_json:
        print(json.dumps(result, sort_keys=True, default=_json_default))
    else:
        print(human(result) if human else json.dumps(result, indent=2, sort_keys=True, default=_json_default))


def _json_default(obj):
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(obj)


# --------------------------------------------------------------------------------------- early checks
# Checked before torch is imported, data loaded or files written, so that a typo answers at once (test_cli.py).
def check_dataset(key: str) -> str:
    """``key`` as registered (names are case-insensitive: ``JSB`` -> ``jsb``); DataError unless it names a known
    benchmark, ``bach`` or an existing ``user:NAME`` set."""
    from lapmusic.core.errors import DataError
    from lapmusic.data.catalog import DATASETS
    from lapmusic.data.registry import dataset_key

    typed, key = key, dataset_key(key)
    if key.startswith("user:"):
        from lapmusic.data.user import user_dataset_keys, user_dataset_path

        if not user_dataset_path(key).is_file():
            known = ", ".join(user_dataset_keys()) or "none yet"
            raise DataError(f"no user dataset {key!r} (user datasets: {known}); make one from your MIDI files "
                            "first (lapmusic datasets add NAME FILES, or the app's upload)")
    elif key not in DATASETS:
        raise DataError(f"unknown dataset {typed!r}; choose one of {', '.join(DATASETS)} or user:NAME")
    return key


def check_run_dir(path: str) -> None:
    """Raise CheckpointError unless ``path`` is a folder holding a run's config.json (cheap, no torch)."""
    from pathlib import Path

    from lapmusic.core.errors import CheckpointError

    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"run folder {folder} does not exist")
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} is not a run folder: it has no config.json")


def check_file(path: str | None, what: str) -> None:
    """Raise LapMusicError naming ``what`` unless ``path`` is None or an existing file."""
    import os

    if path is not None and not os.path.isfile(path):
        raise LapMusicError(f"{what} {path} does not exist")


def check_device(name: str | None) -> None:
    """Raise LapMusicError unless ``name`` is None, ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Only the spelling: whether CUDA is present is checked where torch is imported anyway.
    """
    if name is None:
        return
    if name not in ("auto", "cpu", "cuda") and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise LapMusicError(f"unknown device {name!r}; use auto, cpu or cuda")


# --------------------------------------------------------------------------------------- argument types
def greedy_threshold(text: str, run) -> float:
    """``--threshold``: a probability, or ``valid`` for the run's validation-chosen one (final.json)."""
    if text == "valid":
        if not run.final or run.final.get("threshold") is None:
            raise LapMusicError("--threshold valid needs a finished run whose final.json has a threshold "
                                "(runs trained before this option): give a number instead")
        return float(run.final["threshold"])
    try:
        value = float(text)
    except ValueError:
        raise LapMusicError(f"--threshold takes a probability or 'valid', not {text!r}") from None
    if not 0 < value < 1:
        raise LapMusicError(f"--threshold must be between 0 and 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def seed_list(text: str) -> list[int]:
    """``N`` -> seeds ``0..N-1``; ``11,12,13`` -> those seeds (a single seed by value: ``7,``)."""
    parts = [part.strip() for part in text.split(",")]
    try:
        if len(parts) == 1:
            count = int(parts[0])
            if count < 1:
                raise ValueError
            return list(range(count))
        seeds = [int(part) for part in parts if part]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds takes a count N (seeds 0..N-1) or a comma-separated list like 11,12,13, not {text!r}"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds needs distinct seeds, got {text!r}")
    return seeds


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def steps_per_beat(text: str) -> int:
    """argparse type: frames per quarter note, 1..96."""
    value = positive_int(text)
    if value > 96:
        raise argparse.ArgumentTypeError(f"must be 1..96, got {text}")
    return value


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    import math

    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value
