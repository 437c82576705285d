"""Datasets made from your own MIDI files (the app's upload and ``lapmusic datasets add``).

One function, :func:`dataset_from_midi`, serves both, so the app and the CLI accept and refuse the same
files for the same reasons. Inputs are untrusted and bounded *before* any work: the number of files and
their total size (:class:`UploadLimits`) from the file system or the upload's byte counts, then each file's
size, notes, length in seconds and piano-roll frames (:class:`lapmusic.data.midifile.MidiLimits`) while it is
scanned and before its roll is allocated. A file over a per-file limit is reported by name with the reason
and the others are used; an upload over a per-upload limit is refused as a whole, before any file is read.

Datasets are stored as ``user/NAME.npz`` in the cache folder and loaded as ``user:NAME``. A dataset built in
the app belongs to its browser session (``NAME`` ends with the session's tag, :func:`owner_tag`) unless it is
shared on purpose; an existing name is never replaced unless asked (:func:`save_user_dataset`).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from lapmusic.core.errors import DataError
from lapmusic.core.io import storage_error
from lapmusic.data.dataset import Dataset, cache_dir, save_dataset_npz
from lapmusic.data.midi import read_midi_piece
from lapmusic.data.midifile import MidiLimits, env_limit, megabytes

MIDI_SUFFIXES = (".mid", ".midi")


@dataclass(frozen=True)
class UploadLimits:
    """What one upload (or one ``lapmusic datasets add``) may hold, checked before any file is parsed.

    The byte limit bounds the CPU time an upload costs (``benchmarks/bench_upload.py`` measures it).

    Attributes
    ----------
    max_files : int, default=50
        Most files per upload (``LAPMUSIC_MAX_UPLOAD_FILES``).
    max_bytes : int, default=16 MB
        Most bytes in all (``LAPMUSIC_MAX_UPLOAD_BYTES``).
    """

    max_files: int = 50
    max_bytes: int = 16 * 1024 * 1024

    @classmethod
    def from_env(cls) -> "UploadLimits":
        """The limits from the environment variables above (defaults where unset); a bad value is a
        :class:`DataError`."""
        return cls(
            max_files=env_limit("LAPMUSIC_MAX_UPLOAD_FILES", cls.max_files),
            max_bytes=env_limit("LAPMUSIC_MAX_UPLOAD_BYTES", cls.max_bytes),
        )


@dataclass(frozen=True)
class BadFile:
    """A file left out of a dataset: its name and why (e.g. ``"truncated MIDI file: ..."``)."""

    name: str
    reason: str


def _expand(files: Sequence, limit: int) -> tuple[list, bool]:
    """Folders replaced by their ``.mid``/``.midi`` files (sorted), and whether the list is complete: it
    stops past ``limit`` files, so a folder of a million files is not listed to the end."""
    items: list = []
    for item in files:
        if isinstance(item, (str, os.PathLike)) and Path(item).is_dir():
            found = []
            with os.scandir(item) as entries:
                for entry in entries:
                    if entry.name.lower().endswith(MIDI_SUFFIXES) and entry.is_file():
                        found.append(Path(entry.path))
                        if len(items) + len(found) > limit:
                            return items + found, False  # already too many: the caller refuses
            items.extend(sorted(found))
        else:
            items.append(item)
    return items, True


def _label(item) -> str:
    return item[0] if isinstance(item, tuple) else Path(item).name


def check_upload(sizes: Sequence[int], limits: UploadLimits, complete: bool = True) -> None:
    """Refuse, before reading any file, an upload with too many files or too many bytes in all.

    ``sizes``: the byte count of each file (``complete=False``: only the start of a longer list)."""
    if len(sizes) > limits.max_files:
        count = f"{len(sizes)}" if complete else f"more than {limits.max_files}"
        raise DataError(
            f"too many files: {count} in one upload; the limit is {limits.max_files} "
            "(LAPMUSIC_MAX_UPLOAD_FILES); make the dataset from fewer files, or raise the limit"
        )
    total = sum(sizes)
    if total > limits.max_bytes:
        raise DataError(
            f"too much data: {megabytes(total)}{f' ({total:,} bytes)' if total >= 2**10 else ''} in one upload; "
            f"the limit is {megabytes(limits.max_bytes)} (LAPMUSIC_MAX_UPLOAD_BYTES); make the dataset from "
            "fewer or smaller files, or raise the limit"
        )


def _size(item) -> int:
    """Bytes of a ``(name, bytes)`` pair, or of a file by ``stat`` (0 when unreadable: the per-file report
    says why)."""
    if isinstance(item, tuple):
        return len(item[1])
    try:
        return Path(item).stat().st_size
    except OSError:
        return 0


def dataset_from_midi(
    files: Sequence,
    name: str = "my MIDI",
    *,
    step_seconds: float | None = None,
    steps_per_beat: int | None = 2,
    out_of_range: str = "fold",
    max_bytes: int | None = None,
    limits: MidiLimits | None = None,
    upload_limits: UploadLimits | None = None,
    split_fractions: tuple[float, float] = (0.8, 0.1),
    min_frames: int = 2,
    progress=None,
) -> tuple[Dataset, list[BadFile]]:
    """Make a dataset from MIDI files, keeping the good ones and naming the others.

    Drum tracks are dropped. The upload as a whole is checked against ``upload_limits`` before any file is
    read; each file against ``limits`` before its piano roll is allocated.

    Parameters
    ----------
    files : sequence of str, os.PathLike or tuple of (str, bytes)
        Paths, folders (their ``.mid``/``.midi`` files, sorted) or ``(name, bytes)`` pairs such as uploads.
    name : str, default="my MIDI"
        The dataset's name; its key is ``"user:" + slugify(name)``.
    step_seconds : float, optional
        A grid in seconds; when given it replaces ``steps_per_beat``.
    steps_per_beat : int, default=2
        Frames per quarter note (2 = eighth notes), following tempo changes.
    out_of_range : {"fold", "drop"}, default="fold"
        Pitches outside MIDI 21..108 are moved by octaves into range, or dropped.
    max_bytes : int, optional
        Overrides the byte limit of ``limits``.
    limits : MidiLimits, optional
        What each file may cost; default :meth:`MidiLimits.from_env`.
    upload_limits : UploadLimits, optional
        What all the files together may hold; default :meth:`UploadLimits.from_env`.
    split_fractions : tuple of (float, float), default=(0.8, 0.1)
        Fractions of the pieces, in the given order, for train and valid; the rest is test. There is at
        least one training piece.
    min_frames : int, default=2
        Shorter pieces are left out as empty.
    progress : callable, optional
        ``progress(fraction, message)``, called once per file.

    Returns
    -------
    dataset : Dataset
        Not yet stored: see :func:`save_user_dataset`. Its ``bad_files`` is the list below. Its meter: the
        most common time signature of the files (None when none has one); on a ``steps_per_beat`` grid,
        ``frames_per_beat = steps_per_beat`` and ``step_seconds`` plays the files' median tempo.
    bad : list of BadFile
        Files left out (corrupt, truncated, not MIDI, empty, over a limit of ``limits``), by name with the
        reason.

    Raises
    ------
    DataError
        If the upload has too many files or bytes (before any file is read), or no file is usable.
    """
    if step_seconds is not None:
        steps_per_beat = None
    limits = limits or MidiLimits.from_env(max_bytes=max_bytes)
    upload_limits = upload_limits or UploadLimits.from_env()
    items, complete = _expand(files, upload_limits.max_files)
    check_upload([_size(item) for item in items], upload_limits, complete)
    rolls, bad, tempi, meters = [], [], [], []
    for i, item in enumerate(items):
        label = _label(item)
        if progress is not None:
            progress(i / max(1, len(items)), f"reading {label} ({i + 1}/{len(items)})")
        try:
            piece = read_midi_piece(item, step_seconds=step_seconds, steps_per_beat=steps_per_beat,
                                    out_of_range=out_of_range, limits=limits)
        except DataError as exc:
            bad.append(BadFile(label, str(exc).removeprefix(f"{label}: ")))
            continue
        if len(piece.roll) < min_frames or not piece.roll.any():
            bad.append(BadFile(label, "no notes (empty or drums only)"))
            continue
        rolls.append(piece.roll)
        tempi.append(piece.qpm)
        if piece.time_signature is not None:
            meters.append(piece.time_signature)
    if not rolls:
        reasons = "; ".join(f"{b.name}: {b.reason}" for b in bad) or "no MIDI files given (.mid or .midi)"
        raise DataError(f"no usable MIDI file ({reasons})")
    n = len(rolls)
    n_train = max(1, int(round(split_fractions[0] * n)))
    n_valid = min(n - n_train, int(round(split_fractions[1] * n)))
    if step_seconds is None:  # frames follow the beat: play them at the files' median tempo
        step_seconds = 60.0 / (statistics.median(tempi) * steps_per_beat)
    dataset = Dataset(
        key=f"user:{slugify(name)}", name=name, train=rolls[:n_train], valid=rolls[n_train:n_train + n_valid],
        test=rolls[n_train + n_valid:], step_seconds=step_seconds, source="MIDI files", bad_files=bad,
        frames_per_beat=steps_per_beat, time_signature=Counter(meters).most_common(1)[0][0] if meters else None,
    )
    return dataset, bad


def slugify(name: str) -> str:
    """``name`` as a file name: lower-case letters, digits and single dashes, at most 40 characters."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:40] or "dataset"


OWNED = re.compile(r"[a-z0-9][a-z0-9-]{0,39}-u[0-9a-f]{8}")
"""A dataset name owned by one browser session: its slug, ``-u``, and 8 hex digits of the owner's tag."""


def owner_tag(owner: str) -> str:
    """``u`` and 8 hex digits of SHA-256 of ``owner`` (an app session id): the suffix of its datasets' names."""
    return "u" + hashlib.sha256(owner.encode("utf-8")).hexdigest()[:8]


def user_dir() -> Path:
    return cache_dir() / "user"


def stored_name(key_or_name: str, owner: str | None = None) -> str:
    """The file name (without ``.npz``) of ``user:NAME`` or of a dataset named NAME.

    Parameters
    ----------
    key_or_name : str
        ``user:NAME``, or a name (slugified). A name already owned (``slug-uXXXXXXXX``) is kept as it is.
    owner : str, optional
        The session that owns the dataset: its tag is appended. None: a shared name, seen by everyone.

    Returns
    -------
    str
    """
    name = key_or_name.removeprefix("user:")
    if owner is None and OWNED.fullmatch(name):
        return name
    slug = slugify(name)
    if owner is None:
        return slug
    return f"{slug}-{owner_tag(owner)}"


def user_dataset_path(key_or_name: str, owner: str | None = None) -> Path:
    """Where ``user:NAME`` (or a dataset named NAME, owned by ``owner`` when given) is stored."""
    return user_dir() / f"{stored_name(key_or_name, owner)}.npz"


def save_user_dataset(dataset: Dataset, *, owner: str | None = None, replace: bool = False) -> str:
    """Store a dataset in the user cache, as ``<cache>/user/NAME.npz``; never replaces one silently.

    Parameters
    ----------
    dataset : Dataset
        Its key ``user:NAME`` (or, for other keys, its name) gives the file's name.
    owner : str, optional
        The app session that owns it: the name gets the owner's tag (:func:`owner_tag`), so that two
        sessions choosing the same name make two datasets. None: the name as given, shared by everyone.
    replace : bool, default False
        Overwrite a dataset of the same stored name (``lapmusic datasets add --replace``).

    Returns
    -------
    key : str
        ``"user:NAME"``, which :func:`lapmusic.data.registry.load_dataset` and runs refer to.

    Raises
    ------
    DataError
        When a dataset of that name exists and ``replace`` is False; nothing is written then.
    lapmusic.core.io.StorageError
        When the cache folder cannot be written.
    """
    name = stored_name(dataset.key if dataset.key.startswith("user:") else dataset.name, owner)
    path = user_dataset_path(name)
    if replace:
        save_dataset_npz(dataset, path)
        return f"user:{name}"
    exists = DataError(f"a dataset user:{name} exists already; choose another name"
                       + ("" if owner is not None else ", or replace it (lapmusic datasets add --replace)"))
    if path.exists():
        raise exists  # before the work of compressing it
    draft = path.with_name(f".{name}.{secrets.token_hex(4)}.draft.npz")
    save_dataset_npz(dataset, draft)
    try:
        os.link(draft, path)  # fails when the name was taken meanwhile: a check-then-write race loses nothing
    except FileExistsError:
        raise exists from None
    except OSError as exc:
        raise storage_error(path.parent, exc) from None
    finally:
        draft.unlink(missing_ok=True)
    return f"user:{name}"


def user_dataset_keys(owner: str | None = None, *, everyone: bool = True) -> list[str]:
    """The user datasets' keys, sorted.

    Parameters
    ----------
    owner : str, optional
        With ``everyone=False``: the shared datasets and those this session owns.
    everyone : bool, default True
        Every dataset (the ``lapmusic`` command on the server machine).

    Returns
    -------
    list of str
        ``user:NAME`` keys.
    """
    folder = user_dir()
    names = sorted(p.stem for p in folder.glob("*.npz") if not p.name.startswith(".")) if folder.is_dir() else []
    if not everyone:
        mine = f"-{owner_tag(owner)}" if owner is not None else None
        names = [n for n in names if not OWNED.fullmatch(n) or (mine is not None and n.endswith(mine))]
    return [f"user:{n}" for n in names]


def dataset_label(key: str) -> str:
    """How the app names ``user:NAME``: ``my-songs (yours)`` for an owned one, ``my-songs (shared)`` else."""
    name = key.removeprefix("user:")
    if OWNED.fullmatch(name):
        return f"{name.rsplit('-', 1)[0]} (yours)"
    return f"{name} (shared)"
