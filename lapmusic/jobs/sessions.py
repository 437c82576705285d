"""Browser-session identities that cannot be borrowed: server-issued ids signed with a server secret.

A session id is ``secrets.token_urlsafe(12)`` (96 random bits) issued by the server, never chosen by the
browser. The app keeps it in the URL together with ``token = HMAC-SHA256(secret, id)`` so that a page
refresh, or a link the student copies to another browser, restores the same session. A made-up or edited
id fails the HMAC check (constant-time comparison) and the browser gets a new session instead.

The secret is 32 random bytes in ``RUNS/.lapmusic/secret`` (mode 0600), created on first use, so links
stay valid across server restarts and are worthless against another installation. Deleting the file
invalidates every link.

The optional teacher password (``LAPMUSIC_TEACHER_PASSWORD``) lets one person stop or delete any run. Wrong
tries are counted per client address (:class:`PasswordGuard`): after a few, each further try must wait a
growing delay, and after ``LAPMUSIC_TEACHER_MAX_TRIES`` the address is locked out for a quarter of an hour.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import secrets
import threading
import time
from typing import Callable

from lapmusic.jobs.folder import state_dir

SECRET_NAME = "secret"


def server_secret(runs_dir: str | os.PathLike) -> bytes:
    """The server secret of this runs folder, created (exclusively, mode 0600) when missing."""
    path = state_dir(runs_dir) / SECRET_NAME
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{SECRET_NAME}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(secrets.token_bytes(32))
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(tmp, path)  # fails when another process created it first: then theirs wins
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return path.read_bytes()


def sign(secret: bytes, session: str) -> str:
    """The URL token of ``session``: HMAC-SHA256 with the server secret, 128 bits, URL-safe base64."""
    digest = hmac.new(secret, session.encode("utf-8"), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def verify(secret: bytes, session: str | None, token: str | None) -> bool:
    """True when ``token`` is the server's signature of ``session`` (constant-time comparison)."""
    if not session or not token or len(session) > 64 or len(token) > 64:
        return False
    return hmac.compare_digest(sign(secret, session), token)


def new_session(secret: bytes) -> tuple[str, str]:
    """A fresh ``(session id, token)`` pair."""
    session = secrets.token_urlsafe(12)
    return session, sign(secret, session)


def teacher_password() -> str | None:
    """``$LAPMUSIC_TEACHER_PASSWORD`` or None (then nobody can stop or delete other people's runs)."""
    value = os.environ.get("LAPMUSIC_TEACHER_PASSWORD", "")
    return value or None


def is_teacher_password(candidate: str | None) -> bool:
    expected = teacher_password()
    if expected is None or not candidate:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), candidate.encode("utf-8"))


class PasswordGuard:
    """Wrong teacher passwords counted per client: a delay after ``free_tries``, a lockout after ``max_tries``.

    Thread-safe; one per server process (:data:`TEACHER_GUARD`). A success forgets the client's failures.

    Parameters
    ----------
    free_tries : int, default 3
        Wrong tries answered at once.
    max_tries : int, default 10
        Wrong tries after which the client is locked out (``LAPMUSIC_TEACHER_MAX_TRIES``).
    lockout_seconds : float, default 900
    clock : callable, default time.monotonic
    """

    def __init__(self, free_tries: int = 3, max_tries: int | None = None, lockout_seconds: float = 900.0,
                 clock: Callable[[], float] = time.monotonic):
        if max_tries is None:
            text = os.environ.get("LAPMUSIC_TEACHER_MAX_TRIES", "").strip()
            max_tries = int(text) if text.isdigit() and int(text) > 0 else 10
        self.free_tries, self.max_tries, self.lockout_seconds = free_tries, max_tries, lockout_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[int, float]] = {}  # client -> (wrong tries, time of the last one)

    def wait_seconds(self, client: str | None) -> float:
        """Seconds before ``client`` may try again (0: now)."""
        count, last = self._failures.get(client or "local", (0, 0.0))
        if count >= self.max_tries:
            pause = self.lockout_seconds
        elif count > self.free_tries:
            pause = min(60.0, 2.0 ** (count - self.free_tries))
        else:
            return 0.0
        return max(0.0, last + pause - self._clock())

    def attempt(self, client: str | None, candidate: str | None) -> str | None:
        """Check a teacher password typed by ``client``.

        Parameters
        ----------
        client : str or None
            The client's address (None on the server machine).
        candidate : str or None
            What was typed.

        Returns
        -------
        str or None
            None when it is the password; else the one-line reason for the page (wrong, wait, locked out).
            A try while the client must wait is refused without looking at the password.
        """
        key = client or "local"
        with self._lock:
            if (wait := self.wait_seconds(client)) > 0:
                count = self._failures[key][0]
                if count >= self.max_tries:
                    return (f"Too many wrong passwords from your address ({count}): teacher mode is locked for "
                            f"{math.ceil(wait / 60)} more minute(s).")
                return f"Wrong password {count} times: wait {math.ceil(wait)} s before trying again."
            if is_teacher_password(candidate):
                self._failures.pop(key, None)
                return None
            count = self._failures.get(key, (0, 0.0))[0] + 1
            self._failures[key] = (count, self._clock())
            left = self.max_tries - count
            if left <= 0:
                return (f"Wrong password. Too many wrong tries from your address: teacher mode is locked for "
                        f"{math.ceil(self.lockout_seconds / 60)} minutes.")
            return f"Wrong password ({left} more tries before teacher mode is locked for this address)."


TEACHER_GUARD = PasswordGuard()
"""The server process's count of wrong teacher passwords."""
