"""Datasets loaded once per server process and shared by every page (a classroom uses the same one).

No Streamlit here. A load runs in its own thread, so a page that stops waiting (a rerun) does not abort it.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable


def dataset_token(key: str) -> str:
    """Identifies one version of a dataset: the key, plus the file's mtime for ``user:NAME`` datasets
    (so that rebuilding an upload under the same name is not served from memory)."""
    if not key.startswith("user:"):
        return key
    from lapmusic.data.user import slugify, user_dir

    path = user_dir() / f"{slugify(key.removeprefix('user:'))}.npz"
    try:
        return f"{key}@{path}@{path.stat().st_mtime_ns}"
    except OSError:
        return key


class _Loading:
    """One dataset being loaded (or loaded) in its own thread; any number of callers can wait on it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.started = time.monotonic()
        self.fraction = 0.0
        self.message = "starting"
        self.result = None
        self.error: BaseException | None = None

    def update(self, fraction: float, message: str) -> None:
        self.fraction, self.message = float(fraction), str(message)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def eta_seconds(self, typical: float | None = None) -> float | None:
        """Seconds left: extrapolated from the progress once past 5 %, else ``typical - elapsed``."""
        if self.done.is_set():
            return 0.0
        if self.fraction >= 0.05:
            return self.elapsed * (1.0 - self.fraction) / self.fraction
        return None if typical is None else max(0.0, typical - self.elapsed)

    def wait(self, progress=None, poll: float = 0.25):
        while not self.done.wait(poll):
            if progress is not None:
                progress(self.fraction, self.message)
        if self.error is not None:
            raise self.error
        return self.result


class DatasetCache:
    """Datasets loaded once per process and shared by every page and job (a classroom uses the same one).

    A load runs in its own thread, so a caller that gives up waiting (a Streamlit rerun) does not abort
    it, and concurrent callers (the Data page and a training job, both asking for the slow Bach build)
    wait for the same load instead of doing it twice. A failed load is retried by the next call.
    """

    def __init__(self, loader: Callable[..., Any] | None = None):
        self._loader = loader
        self._lock = threading.Lock()
        self._entries: dict[str, _Loading] = {}

    def start(self, key: str) -> _Loading:
        """Begin loading ``key`` unless it is loaded or loading; returns the entry to wait on."""
        token = dataset_token(key)
        with self._lock:
            entry = self._entries.get(token)
            if entry is not None and not (entry.done.is_set() and entry.error is not None):
                return entry
            entry = _Loading()
            self._entries[token] = entry
        threading.Thread(target=self._load, args=(key, entry), name=f"lapmusic-load-{key}", daemon=True).start()
        return entry

    def get(self, key: str, progress=None):
        """The dataset ``key`` (a ``lapmusic.data.Dataset``); ``progress(fraction, message)`` while it loads."""
        return self.start(key).wait(progress)

    def _load(self, key: str, entry: _Loading) -> None:
        loader = self._loader
        if loader is None:
            from lapmusic.data.registry import load_dataset as loader
        try:
            entry.result = loader(key, progress=entry.update)
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter
            entry.error = exc
        finally:
            entry.done.set()
