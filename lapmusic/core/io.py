"""Small file helpers: atomic, durable writes (a crash, a cancel or a power cut never leaves a half-written
file behind), tolerant readers for the JSON files of a run folder (which another thread or process may be
rewriting), and one translation of "disk full / permission denied / read-only" into a clear message."""

from __future__ import annotations

import errno
import json
import os
import random
import secrets
import time
from pathlib import Path
from typing import Any

from lapmusic.core.errors import LapMusicError

# errno -> what went wrong and what to do (the folder is named by storage_error)
_STORAGE_ERRORS = {
    errno.ENOSPC: "the disk is full: free some space (or choose a folder on another disk) and try again",
    errno.EDQUOT: "the disk quota is exhausted: free some space (or choose another folder) and try again",
    errno.EACCES: "permission denied: choose a folder you can write to, or fix its permissions",
    errno.EPERM: "permission denied: choose a folder you can write to, or fix its permissions",
    errno.EROFS: "the file system is read-only: choose a folder on a writable disk",
}


class StorageError(LapMusicError, OSError):
    """A file could not be written: disk full, permission denied or a read-only file system.

    Also an ``OSError``, so that code which tolerates failed writes (``except OSError``) still does."""


def storage_cause(exc: BaseException) -> OSError | None:
    """The disk-full / permission / read-only ``OSError`` behind ``exc``, if any.

    ``torch.save`` reports a failed write as ``RuntimeError: [enforce fail at inline_container.cc...]``
    raised while handling the ``OSError``, so the whole ``__cause__`` / ``__context__`` chain is searched,
    and the message text as a last resort.

    Parameters
    ----------
    exc : BaseException
        Any exception.

    Returns
    -------
    OSError or None
        The first ``OSError`` in the chain whose errno is ENOSPC, EDQUOT, EACCES, EPERM or EROFS (a
        synthetic ENOSPC one for torch's "No space left" text), else None.
    """
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _STORAGE_ERRORS:
            return current
        current = current.__cause__ or current.__context__
    text = str(exc)
    if isinstance(exc, RuntimeError) and ("No space left" in text or "file write failed" in text):
        return OSError(errno.ENOSPC, "No space left on device")
    return None


def storage_error(folder: str | os.PathLike, exc: BaseException) -> LapMusicError:
    """A one-line error for a failed write in ``folder``, saying what to do.

    Parameters
    ----------
    folder : str or os.PathLike
        The folder the write was meant for (named in the message).
    exc : BaseException
        The failure.

    Returns
    -------
    StorageError
        For a storage cause (:func:`storage_cause`): what went wrong and what to do; otherwise the first
        line of ``exc``. The caller raises it.
    """
    cause = storage_cause(exc)
    if cause is None:
        return StorageError(f"could not write in {folder}: {type(exc).__name__}: {exc}".splitlines()[0])
    return StorageError(f"could not write in {folder}: {_STORAGE_ERRORS[cause.errno]} ({cause.strerror or cause})")


def _fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename or a new file in ``folder`` durable (no-op where directories cannot be fsync'd)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory: the rename is still atomic
    finally:
        os.close(fd)


def _is_temp_name(name: str) -> bool:
    """Names of :func:`atomic_save`'s temp files: ``.{target}.{random}.tmp``."""
    return name.startswith(".") and name.endswith(".tmp")


def remove_stale_temp_files(folder: str | os.PathLike) -> list[str]:
    """Delete the temp files (``.NAME.RANDOM.tmp``) that killed writers left in ``folder``.

    Only safe while holding the folder's writer lock (:func:`lapmusic.core.lock.run_lock`), which takes
    care of it.

    Parameters
    ----------
    folder : str or os.PathLike
        The folder; a missing or unreadable one removes nothing.

    Returns
    -------
    list of str
        The names removed.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if _is_temp_name(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed.append(entry.name)
            except OSError:
                continue
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically and durably write ``data`` to ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        The file to create or replace; its folder is created when missing.
    data : bytes
        The whole new content.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    StorageError
        As :func:`atomic_save`.
    """
    return atomic_save(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """:func:`atomic_write_text` of ``obj`` as indented, key-sorted JSON and a final newline."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def new_temp(folder: str | os.PathLike, prefix: str, suffix: str) -> tuple[int, str]:
    """Create and open (write-only) a new file named ``prefix + random + suffix`` in ``folder``.

    Created with mode ``0o666`` and ``O_EXCL``, so the kernel applies the umask as for ``open(path, "w")``
    (``tempfile.mkstemp``'s ``0o600`` would make a runs folder shared by several users unreadable to the
    others).

    Returns
    -------
    fd : int
        The open file descriptor.
    path : str
        The new file's path.

    Raises
    ------
    OSError
        The folder cannot be written (a FileExistsError after 100 names already taken).
    """
    for _ in range(100):
        path = os.path.join(folder, f"{prefix}{secrets.token_hex(6)}{suffix}")
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", str(folder))


def atomic_save(path: str | os.PathLike, writer) -> Path:
    """Atomically and durably create or replace ``path`` with what ``writer`` writes.

    Temp file in the same folder, fsync of the file, ``os.replace``, fsync of the folder: after a crash the
    path holds the old or the new content, and once this returns the new content survives a power cut.
    No temp file is left behind on failure.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; its folder is created when missing.
    writer : callable
        ``writer(file_object)`` writes the content to a binary file object, e.g.
        ``lambda f: torch.save(state, f)`` or ``lambda f: np.savez(f, **arrays)``.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    StorageError
        A full disk, an exhausted quota, a permission or a read-only file system, naming the folder.
        Any other exception of ``writer`` propagates unchanged.
    """
    path = Path(path)
    tmp = None
    pause = _test_pause()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = new_temp(path.parent, f".{path.name}.", ".tmp")
        with os.fdopen(fd, "wb") as handle:
            writer(_PausingHandle(handle, pause) if pause else handle)
            handle.flush()
            os.fsync(handle.fileno())
        if pause:
            time.sleep(random.uniform(0, pause))
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except BaseException as exc:
        # Leave no temp file behind, whatever happened (a kill -9 is cleaned by the next run_lock).
        if tmp is not None and os.path.exists(tmp):
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if storage_cause(exc) is not None:
            raise storage_error(path.parent, exc) from exc
        raise
    return path


TEST_WRITE_PAUSE = "LAPMUSIC_TEST_WRITE_PAUSE"


def _test_pause() -> float:
    """Crash tests only (``benchmarks/bench_killloop.py``): with ``LAPMUSIC_TEST_WRITE_PAUSE=SECONDS`` set,
    every atomic write sleeps up to that long at a random byte offset and again before its rename, so
    that a ``kill -9`` at a random moment often lands inside a write. Unset (always, in real use): 0."""
    try:
        return max(0.0, float(os.environ.get(TEST_WRITE_PAUSE) or 0.0))
    except ValueError:
        return 0.0


class _PausingHandle:
    """A file object that sleeps once, in the middle of its first write, at a random byte offset."""

    def __init__(self, handle, pause: float):
        self._handle, self._pause, self._paused = handle, pause, False

    def write(self, data) -> int:
        if self._paused or not len(data):
            return self._handle.write(data)
        self._paused = True
        view = memoryview(data).cast("B")
        cut = random.randrange(len(view) + 1)
        written = self._handle.write(view[:cut])
        self._handle.flush()  # the bytes so far reach the temp file: a kill now leaves it half-written
        time.sleep(random.uniform(0, self._pause))
        return written + self._handle.write(view[cut:])

    def __getattr__(self, name):
        return getattr(self._handle, name)


def read_json(path: str | os.PathLike) -> dict | None:
    """The JSON object in ``path``, or None when it is missing, unreadable, not (yet) valid JSON or not an
    object (another process may be rewriting it: readers never fail on it)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """One dict per line of a JSON-lines file (``[]`` when it is missing); unreadable lines are skipped."""
    rows: list[dict] = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # blank or half-written: never fatal for a reader
                if isinstance(row, dict):
                    rows.append(row)
    except OSError:
        return []
    return rows
