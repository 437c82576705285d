"""The job manager's own files in a runs folder (``RUNS/.lapmusic``) and which server owns the folder.

``RUNS/.lapmusic`` holds the queue (``queue.json``), the secret that signs session links (``secret``) and the
owner lock (``manager.lock``); run listings skip it. One server at a time holds the lock and manages the
folder's jobs; another server on the same folder only reads it. The lock is released when its process ends,
however it ends.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def state_dir(runs_dir: str | os.PathLike) -> Path:
    """``RUNS/.lapmusic``: the manager's own files; hidden from run listings."""
    return Path(runs_dir) / ".lapmusic"


def take_ownership(runs_dir: Path) -> int | None:
    """Take the owner lock of ``runs_dir`` without waiting. Returns the lock's file descriptor (close it to
    let go), or None when another server holds it."""
    path = state_dir(runs_dir) / "manager.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        log.warning("another server manages %s; this one only shows its runs", runs_dir)
        return None
    return fd
