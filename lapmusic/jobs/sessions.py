"""Browser-session identities that cannot be borrowed: server-issued ids signed with a server secret.

A session id is ``secrets.token_urlsafe(12)`` (96 random bits) issued by the server, never chosen by the
browser. The app keeps it in the URL together with ``token = HMAC-SHA256(secret, id)`` so that a page
refresh, or a link the student copies to another browser, restores the same session. A made-up or edited
id fails the HMAC check (constant-time comparison) and the browser gets a new session instead.

The secret is 32 random bytes in ``RUNS/.lapmusic/secret`` (mode 0600), created on first use, so links
stay valid across server restarts and are worthless against another installation. Deleting the file
invalidates every link.

The optional teacher password (``LAPMUSIC_TEACHER_PASSWORD``) lets one person stop or delete any run.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

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
