"""One writer per run folder: an exclusive OS file lock on ``RUNDIR/.lock`` and a lease that works across hosts.

``train()`` holds :func:`run_lock` for its whole duration, so the CLI ``train``, ``train --resume`` and the
app's training jobs all take it. A second writer (another process, or another thread of this process) gets
:class:`RunFolderBusy` naming the owner before it writes anything.

How it works: ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``RUNDIR/.lock``. The kernel drops the lock when its
holder dies (even by ``kill -9``), so a lock left by a dead process is stale by construction and simply
taken over. The file holds the owner as JSON ``{"pid", "host", "since", "heartbeat", "lease", "token"}``
(times in Unix seconds); it is emptied on release and never deleted (deleting a lock file that another
process has open would let two writers lock two different files).

Run folders on shared storage (a cluster's ``LAPMUSIC_RUNS_DIR``): ``flock`` may not reach other hosts, and
another host's PID means nothing here. So the record is also a *lease*: a thread of the holder rewrites its
``heartbeat`` every quarter of ``lease`` seconds (``$LAPMUSIC_LEASE_SECONDS``, default
:data:`lapmusic.core.lease.LEASE_SECONDS`). A record of another host owns the folder while its heartbeat is younger than its
lease, whatever the local ``flock`` says; a record of this host owns it while its PID lives. A holder whose
record was taken over (frozen past its lease) stops renewing; a late write (frozen inside a renewal) is undone.
Where ``flock`` is missing (or ``$LAPMUSIC_LOCK_FLOCK=0``, for a shared file system whose locks are not
coherent between hosts) the record alone decides, and a taker re-reads it after :data:`SETTLE_SECONDS` to
lose a simultaneous race cleanly. ``$LAPMUSIC_HOST`` replaces the host name (containers sharing a name; tests
simulate two hosts with it).

The lock is re-entrant within one thread (a worker may wrap ``train()`` in :func:`run_lock` itself).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import secrets
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from lapmusic.core.errors import LapMusicError
from lapmusic.core.io import remove_stale_temp_files, storage_error
from lapmusic.core.lease import encode_record, host_name, lease_fresh, lease_seconds, use_flock

LOCK_NAME = ".lock"
ACQUIRE_PATIENCE = 0.5  # seconds of retrying: a reader's brief shared probe must not look like an owner
SETTLE_SECONDS = 0.2  # without flock: wait this long after writing a claim, then check it is still ours

log = logging.getLogger(__name__)

_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_held: dict[str, dict] = {}  # realpath of a lock file -> {"fd", "thread", "count"} (this process only)
_held_guard = threading.Lock()


def _forget_after_fork() -> None:
    """In a forked child: the parent's locks are the parent's. Close the inherited descriptors (closing a
    copy leaves the parent's flock in place; LOCK_UN would release it) and forget them, so that the child
    is refused like any other process instead of counting as the re-entrant owner."""
    global _renewer, _wake, _held_guard
    _held_guard = threading.Lock()  # the parent's renewing thread may have held it at the fork
    for entry in _held.values():
        try:
            os.close(entry["fd"])
        except OSError:
            pass
    _held.clear()
    _renewer, _wake = None, threading.Event()  # the parent's renewing thread (and its event) is not ours


os.register_at_fork(after_in_child=_forget_after_fork)


class RunFolderBusy(LapMusicError):
    """Another process (or thread) is writing this run folder; ``owner`` is its ``{"pid", "host", "since"}``."""

    def __init__(self, message: str, owner: dict | None = None):
        super().__init__(message)
        self.owner = owner


def _describe_owner(owner: dict | None) -> str:
    """``pid 123 on host h since 2026-11-27 09:50:01 UTC`` (what is known of it)."""
    if not owner:
        return "an unknown process"
    since = owner.get("since")
    when = ""
    if isinstance(since, (int, float)):
        when = " since " + datetime.fromtimestamp(since, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')}{when}"


def _read_owner(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    pid = data.get("pid")
    owner = {"pid": pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
             "host": str(data.get("host", "?")), "since": data.get("since")}
    for key in ("heartbeat", "lease", "token"):
        if key in data:
            owner[key] = data[key]
    return owner


def process_exists(pid: int | None) -> bool:
    """True when ``pid`` is a positive int and signal 0 finds a process with it on this machine (zombies
    included; :func:`lapmusic.jobs.worker.pid_alive` also treats them as dead)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


def _live_by_content(owner: dict | None, now: float | None = None) -> bool:
    """The recorded owner counts when it is a live PID on this host, or its lease on another host is fresh."""
    if not owner:
        return False
    if owner.get("host") != host_name():
        return lease_fresh(owner, now)
    return process_exists(owner.get("pid"))


def _foreign_lease(owner: dict | None) -> bool:
    """Another host's record with a fresh lease: it owns the folder even where our flock succeeds."""
    return bool(owner) and owner.get("host") != host_name() and lease_fresh(owner)


class _Renewer(threading.Thread):
    """Rewrites the heartbeat of every lock this process holds, every quarter of the shortest lease."""

    def __init__(self):
        super().__init__(name="lapmusic-lease", daemon=True)

    def run(self) -> None:
        while True:
            with _held_guard:
                entries = list(_held.values())
                if not entries:
                    global _renewer
                    _renewer = None
                    return
            for entry in entries:
                _renew(entry)
            _wake.wait(min(float(e["owner"]["lease"]) for e in entries) / 4)
            _wake.clear()  # woken early by a new lock, whose lease may be shorter than this wait


_renewer: _Renewer | None = None
_wake = threading.Event()


def _ensure_renewer() -> None:
    global _renewer
    with _held_guard:
        if _renewer is None:
            _renewer = _Renewer()
            _renewer.start()
        else:
            _wake.set()


def _expired(entry: dict) -> bool:
    """True when our last heartbeat is older than our lease: another host may have taken the folder since."""
    owner = entry["owner"]
    lease = owner.get("lease")
    return lease is not None and time.time() - owner.get("heartbeat", owner.get("since", 0)) > lease


def _renew(entry: dict) -> None:
    """One renewal: unless the record on disk is no longer ours (taken over after our lease ran out)."""
    if entry.get("lost"):
        return
    try:
        current = _read_owner(Path(entry["path"]))
        found = None if current is None else current.get("token")
        if found == entry.get("taken_from") and found is not None:
            # The holder we took over froze inside a renewal and wrote its expired record back: claim it again.
            log.warning("the stale holder of %s wrote over our record: claiming it again", entry["path"])
        elif found != entry["owner"]["token"]:
            entry["lost"] = True
            log.warning("lost the lease of %s to %s: not renewing it", entry["path"], _describe_owner(current))
            return
        with _held_guard:  # a release closes the fd under this guard: never write through a reused fd number
            if _held.get(os.path.realpath(entry["path"])) is not entry:
                return
            if _expired(entry):  # frozen past our lease since the read above: the record may be another's now
                entry["lost"] = True
                return
            entry["owner"]["heartbeat"] = time.time()
            os.pwrite(entry["fd"], encode_record(entry["owner"]), 0)
    except (OSError, KeyError):
        pass  # closed by a release in the meantime, or a full disk: the next beat tries again


def lock_owner(run_dir) -> dict | None:
    """Who is writing ``run_dir`` now, if anyone.

    Never takes the lock (a brief shared ``flock`` probe only), never raises, never writes.

    Parameters
    ----------
    run_dir : str or os.PathLike
        A run folder (it may not exist).

    Returns
    -------
    dict or None
        ``{"pid", "host", "since"}`` (``since``: Unix time; ``pid`` None and ``host`` ``"?"`` when the
        holder recorded nothing), with ``heartbeat``, ``lease`` and ``token`` when recorded, of the live
        holder, this process's own included (on this host or, by a fresh lease, on another); None when the
        folder is free, its lock or lease stale, or it was never locked.
    """
    path = Path(run_dir) / LOCK_NAME
    key = os.path.realpath(path)
    with _held_guard:
        mine = _held.get(key)
    if mine is not None and not mine.get("lost"):
        return dict(mine["owner"])
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # no lock file: nobody ever locked it (or we cannot read it)
    try:
        if not use_flock():
            owner = _read_owner(path)
            return owner if _live_by_content(owner) else None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(path)
            return owner if owner else {"pid": None, "host": "?", "since": None}
        except OSError as exc:
            if exc.errno in _NO_FLOCK:
                owner = _read_owner(path)
                return owner if _live_by_content(owner) else None
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        owner = _read_owner(path)
        return owner if _foreign_lease(owner) else None
    finally:
        os.close(fd)


class run_lock:  # noqa: N801 - used like a function: ``with run_lock(run_dir): ...``
    """Hold the exclusive writer lock of ``run_dir`` for a ``with`` block: ``with run_lock(run_dir): ...``.

    Re-entrant within one thread; :meth:`acquire` and :meth:`release` do the same without ``with``. On
    success the folder's stale ``.*.tmp`` files of killed writers are removed.

    Parameters
    ----------
    run_dir : str or os.PathLike
        The folder to lock; created (with parents) when missing.
    clean : bool, default=True
        Remove the stale temp files once the lock is held.

    Attributes
    ----------
    previous : dict or None
        The stale owner recorded in the lock file when it was taken over (``{"pid", "host", "since"}``).

    Raises
    ------
    RunFolderBusy
        Another process or another thread of this one holds the lock; the message names the owner and
        ``owner`` holds it.
    lapmusic.core.io.StorageError
        The folder or its lock file cannot be created or written.
    """

    def __init__(self, run_dir, *, clean: bool = True):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.clean = clean
        self.previous: dict | None = None  # the stale owner taken over, if any
        self._key: str | None = None

    def __enter__(self) -> "run_lock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock (or count one more hold by this thread); raises as the class says."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error(self.run_dir, exc) from None
        key = os.path.realpath(self.path)
        me = threading.get_ident()
        with _held_guard:
            entry = _held.get(key)
            if entry is not None:
                if entry["thread"] == me:
                    entry["count"] += 1
                    self._key = key
                    return
                raise RunFolderBusy(
                    f"{self.run_dir} is being written by another job of this process "
                    f"({_describe_owner(entry['owner'])}); wait for it to finish or stop it, or choose another folder",
                    entry["owner"])
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise storage_error(self.run_dir, exc) from None
        try:
            by_record = self._lock_fd(fd)
            self.previous = _read_owner(self.path)
            now = time.time()
            owner = {"pid": os.getpid(), "host": host_name(), "since": now, "heartbeat": now,
                     "lease": lease_seconds(), "token": secrets.token_hex(8)}
            os.ftruncate(fd, 0)
            os.pwrite(fd, encode_record(owner), 0)
            os.fsync(fd)
            if by_record:  # no lock to arbitrate: a simultaneous taker's record may have replaced ours
                time.sleep(SETTLE_SECONDS)
                if (now_owner := _read_owner(self.path)) is None or now_owner.get("token") != owner["token"]:
                    raise RunFolderBusy(
                        f"{self.run_dir} was just taken by another lapmusic process ({_describe_owner(now_owner)}); "
                        "wait for it to finish or stop it, or choose another folder", now_owner)
        except BaseException as exc:
            os.close(fd)
            if isinstance(exc, OSError):
                raise storage_error(self.run_dir, exc) from None
            raise
        with _held_guard:
            _held[key] = {"fd": fd, "thread": me, "count": 1, "owner": owner, "path": str(self.path),
                          "taken_from": (self.previous or {}).get("token")}
        self._key = key
        _ensure_renewer()
        if self.clean:
            remove_stale_temp_files(self.run_dir)

    def _busy(self, owner: dict | None) -> RunFolderBusy:
        return RunFolderBusy(
            f"{self.run_dir} is being written by another lapmusic process ({_describe_owner(owner)}); "
            "wait for it to finish or stop it, or choose another folder", owner)

    def _lock_fd(self, fd: int) -> bool:
        """Take the OS lock, then check the record for another host's fresh lease. Returns True when the record
        alone decided (no flock here): the caller then confirms its claim after :data:`SETTLE_SECONDS`."""
        deadline = time.monotonic() + ACQUIRE_PATIENCE
        while True:
            try:
                if not use_flock():
                    raise OSError(errno.ENOLCK, "flock switched off by LAPMUSIC_LOCK_FLOCK")
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if _foreign_lease(owner := _read_owner(self.path)):
                    fcntl.flock(fd, fcntl.LOCK_UN)  # our flock does not reach that host: its lease decides
                    raise self._busy(owner)
                return False
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                raise self._busy(_read_owner(self.path)) from None
            except OSError as exc:
                if exc.errno not in _NO_FLOCK:
                    raise
                owner = _read_owner(self.path)  # no flock here: the recorded owner decides
                if _live_by_content(owner) and not (owner.get("pid") == os.getpid()
                                                    and owner.get("host") == host_name()):
                    raise self._busy(owner) from None
                return True

    def release(self) -> None:
        """Give one hold back; the last one empties the owner record and drops the lock. Never raises."""
        key, self._key = self._key, None
        if key is None:
            return
        with _held_guard:
            entry = _held.get(key)
            if entry is None:
                return
            entry["count"] -= 1
            if entry["count"] > 0:
                return
            del _held[key]
            fd = entry["fd"]
            try:
                current = _read_owner(Path(entry["path"]))
                ours = current is not None and current.get("token") == entry["owner"]["token"]
                if ours and not entry.get("lost") and not _expired(entry):  # else: its new owner's, or may be
                    os.ftruncate(fd, 0)  # no owner recorded: readers see a free folder at once
            except OSError:
                pass  # a full or read-only disk must not turn a release into an error
            finally:
                os.close(fd)  # closing drops the flock
