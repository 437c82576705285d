"""The job queue on disk: the order in which waiting runs start, surviving a server restart.

``RUNS/.lapmusic/queue.json`` = ``{"queue": [{"run": NAME, "submitted": t}, ...]}``, first to start
first, rewritten atomically on every change by the one server process that owns the runs folder. Entries
name run folders relative to the runs folder, so the folder can be moved as a whole. Each run folder still
says ``queued`` in its own ``status.json``; :meth:`PersistentQueue.restore` reconciles the two after a
restart (a queued run missing from the file is appended in submission order; an entry whose run is gone or
no longer queued is dropped).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from lapmusic.core.io import atomic_write_json, read_json
from lapmusic.jobs.folder import state_dir

QUEUE_FILE = "queue.json"


class PersistentQueue:
    """An ordered list of run folders, mirrored to ``queue.json`` after every change (not thread-safe:
    the job manager calls it under its own lock)."""

    def __init__(self, runs_dir: str | os.PathLike):
        self.runs_dir = Path(runs_dir)
        self.path = state_dir(runs_dir) / QUEUE_FILE
        self._items: list[tuple[Path, float]] = []

    # ------------------------------------------------------------------ persistence
    def load(self) -> list[tuple[Path, float]]:
        """Read the file; returns ``[(run_dir, submitted), ...]`` in order (unchecked: the caller reconciles)."""
        data = read_json(self.path) or {}
        items = []
        for entry in data.get("queue") or []:
            if not isinstance(entry, dict) or not isinstance(entry.get("run"), str):
                continue
            name = entry["run"]
            if Path(name).is_absolute() or ".." in Path(name).parts:
                continue  # only folders inside the runs folder
            submitted = entry.get("submitted")
            items.append((self.runs_dir / name, float(submitted) if isinstance(submitted, (int, float)) else 0.0))
        return items

    def save(self) -> None:
        entries = [{"run": self._relative(run), "submitted": t} for run, t in self._items]
        atomic_write_json(self.path, {"queue": entries})

    def _relative(self, run_dir: Path) -> str:
        try:
            return str(Path(run_dir).resolve().relative_to(self.runs_dir.resolve()))
        except ValueError:
            return str(run_dir)

    def restore(self, queued: dict[Path, float], front: Iterable[Path] = ()) -> None:
        """The order after a restart, saved: the runs in ``front`` first (by submission time), then the
        file's order, then the queued runs the file misses (by submission time). ``queued`` maps every run
        folder whose status says queued (resolved) to its submission time; other entries are dropped."""
        order = sorted(front, key=queued.__getitem__)
        for run_dir, _ in self.load():
            run_dir = run_dir.resolve()
            if run_dir in queued and run_dir not in order:
                order.append(run_dir)
        order += sorted((r for r in queued if r not in order), key=queued.__getitem__)
        self.replace([(r, queued[r]) for r in order])

    # ------------------------------------------------------------------ the list
    def replace(self, items: list[tuple[Path, float]]) -> None:
        self._items = [(Path(r).resolve(), t) for r, t in items]
        self.save()

    def append(self, run_dir: Path, submitted: float, *, front: bool = False) -> None:
        run_dir = Path(run_dir).resolve()
        if run_dir in self.runs():
            return
        if front:
            self._items.insert(0, (run_dir, submitted))
        else:
            self._items.append((run_dir, submitted))
        self.save()

    def remove(self, run_dir: Path) -> bool:
        run_dir = Path(run_dir).resolve()
        before = len(self._items)
        self._items = [(r, t) for r, t in self._items if r != run_dir]
        if len(self._items) != before:
            self.save()
            return True
        return False

    def pop(self) -> Path | None:
        if not self._items:
            return None
        run_dir, _ = self._items.pop(0)
        self.save()
        return run_dir

    def runs(self) -> list[Path]:
        return [r for r, _ in self._items]

    def position(self, run_dir: Path) -> int | None:
        """1 for the next run to start; None when not queued."""
        try:
            return self.runs().index(Path(run_dir).resolve()) + 1
        except ValueError:
            return None

    def __len__(self) -> int:
        return len(self._items)
