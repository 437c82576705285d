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
import socket
from datetime import datetime, timezone
from pathlib import Path

from lapmusic.core.errors import LapMusicError
from lapmusic.core.lock import lock_owner

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


def describe_holder(owner: dict | None) -> str:
    """Who holds a run folder's writer lock, for a page: ``the lapmusic process 123 on this machine (since
    09:50:01 UTC)``; ``owner`` is :func:`lapmusic.core.lock.lock_owner`'s ``{"pid", "host", "since"}``."""
    if not owner:
        return "another lapmusic process"
    host = owner.get("host")
    where = "this machine" if host == socket.gethostname() else f"host {host}"
    since = owner.get("since")
    when = ""
    if isinstance(since, (int, float)):
        when = f" (since {datetime.fromtimestamp(since, tz=timezone.utc):%Y-%m-%d %H:%M:%S} UTC)"
    return f"the lapmusic process {owner.get('pid', '?')} on {where}{when}, such as `lapmusic train --resume`"


def refuse_if_held(run_dir: Path | None, what_then: str) -> None:
    """Raise LapMusicError naming the process that holds ``run_dir``'s writer lock, if one does.

    ``what_then`` ends the message: what the user can do (``"stop it there"``)."""
    if run_dir is not None and (holder := lock_owner(run_dir)) is not None:
        raise LapMusicError(f"{run_dir.name} is being written by {describe_holder(holder)}; {what_then}")
