"""What the upload endpoint may hold, per browser session, per client address and per server process.

Streamlit keeps every file a browser sends to ``/_stcore/upload_file`` in the server's memory until the
session ends, whatever the file and whether or not the app ever uses it; lapmusic's own limits
(:class:`lapmusic.data.user.UploadLimits`) only run when "Build dataset" is pressed. :class:`UploadGate` is
asked before a request's body is read (:mod:`lapmusic.ui.uploads` wires it into the server) and counts what
is stored and what is on its way, so a client cannot make the server hold more than the limits below,
whatever it sends (no ``Content-Length``, a false one, many sessions, many requests at once).

No Streamlit here: the gate is told what is stored by a function, so tests drive it with plain dicts.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Callable, Mapping

from lapmusic.data.midifile import MidiLimits, env_limit, megabytes
from lapmusic.data.user import UploadLimits

FRAMING_BYTES = 4096
"""Bytes a request may carry beyond its file: the multipart boundary, headers and file name."""


class UploadRefused(Exception):
    """An upload the endpoint does not take; ``status`` is the HTTP answer (413 too much, 429 too often)."""

    def __init__(self, message: str, status: int = 413):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class EndpointLimits:
    """What the upload endpoint holds at most (stored files and requests on their way together).

    Attributes
    ----------
    file_bytes : int
        One file (``LAPMUSIC_MAX_MIDI_BYTES``, the per-file MIDI limit).
    session_files, session_bytes : int
        One browser session (``LAPMUSIC_MAX_UPLOAD_FILES``, ``LAPMUSIC_MAX_UPLOAD_BYTES``: one dataset's worth).
    client_bytes : int, default 64 MB
        One client address, all its sessions together (``LAPMUSIC_MAX_UPLOAD_CLIENT_BYTES``).
    server_bytes : int, default 256 MB
        Everybody together (``LAPMUSIC_MAX_UPLOAD_SERVER_BYTES``).
    client_per_minute : int, default 120
        Upload requests one client address may start in 60 seconds (``LAPMUSIC_MAX_UPLOADS_PER_MINUTE``).
    """

    file_bytes: int = MidiLimits.max_bytes
    session_files: int = UploadLimits.max_files
    session_bytes: int = UploadLimits.max_bytes
    client_bytes: int = 64 * 1024 * 1024
    server_bytes: int = 256 * 1024 * 1024
    client_per_minute: int = 120

    @classmethod
    def from_env(cls) -> "EndpointLimits":
        """The limits from the environment variables above (defaults where unset).

        Raises
        ------
        lapmusic.core.errors.DataError
            When a variable is not a positive number.
        """
        upload = UploadLimits.from_env()
        return cls(
            file_bytes=MidiLimits.from_env().max_bytes, session_files=upload.max_files,
            session_bytes=upload.max_bytes,
            client_bytes=env_limit("LAPMUSIC_MAX_UPLOAD_CLIENT_BYTES", cls.client_bytes),
            server_bytes=env_limit("LAPMUSIC_MAX_UPLOAD_SERVER_BYTES", cls.server_bytes),
            client_per_minute=env_limit("LAPMUSIC_MAX_UPLOADS_PER_MINUTE", cls.client_per_minute),
        )


class Ticket:
    """One admitted request: the bytes it has reserved, grown as its body arrives (:meth:`UploadGate.receive`)."""

    def __init__(self, session: str, client: str, reserved: int):
        self.session, self.client, self.reserved, self.received = session, client, reserved, 0


Stored = Callable[[], Mapping[str, tuple[int, int]]]
"""``{session id: (files, bytes)}`` of what the server holds now."""


class UploadGate:
    """Admits an upload request only while its session, its client and the server stay within the limits.

    Thread-safe. What is stored is read from ``stored`` at every decision (the upload manager is the truth:
    Streamlit also drops files by itself); what is on its way is counted here from the moment a request is
    admitted until :meth:`settle`.

    Parameters
    ----------
    limits : EndpointLimits
    stored : callable
        ``stored() -> {session id: (files, bytes)}``.
    clock : callable, default time.monotonic
    """

    def __init__(self, limits: EndpointLimits, stored: Stored, clock: Callable[[], float] = time.monotonic):
        self.limits, self._stored, self._clock = limits, stored, clock
        self._lock = threading.Lock()
        self._owner: dict[str, str] = {}  # session id -> the client address that uploaded to it
        self._moving: list[Ticket] = []
        self._starts: dict[str, deque] = defaultdict(deque)  # client -> start times in the last minute

    def admit(self, session: str, client: str, claimed: int | None) -> Ticket:
        """Reserve room for one request before its body is read.

        Parameters
        ----------
        session : str
            Streamlit's session id from the upload URL.
        client : str
            The client's address.
        claimed : int or None
            The request's ``Content-Length`` (None when it sends none: its bytes are counted as they arrive).

        Returns
        -------
        Ticket
            Pass it to :meth:`receive` for each part of the body and to :meth:`settle` at the end.

        Raises
        ------
        UploadRefused
            When the request would take its session, client or the server over a limit, or its client
            started too many uploads in the last minute (status 429).
        """
        with self._lock:
            now = self._clock()
            starts = self._starts[client]
            while starts and now - starts[0] > 60.0:
                starts.popleft()
            if len(starts) >= self.limits.client_per_minute:
                raise UploadRefused(
                    f"too many uploads from your address: {self.limits.client_per_minute} a minute at most "
                    "(LAPMUSIC_MAX_UPLOADS_PER_MINUTE); wait a minute and upload again", status=429)
            starts.append(now)
            ticket = Ticket(session, client, 0)
            self._check(ticket, max(0, (claimed or 0) - FRAMING_BYTES), new_file=True)
            self._owner.setdefault(session, client)
            ticket.reserved = max(0, (claimed or 0) - FRAMING_BYTES)
            self._moving.append(ticket)
            return ticket

    def receive(self, ticket: Ticket, size: int) -> None:
        """Count ``size`` more bytes of ``ticket``'s body; refuse as :meth:`admit` once past its reservation."""
        with self._lock:
            ticket.received += size
            extra = ticket.received - FRAMING_BYTES - ticket.reserved
            if extra > 0:
                self._check(ticket, extra, new_file=False)
                ticket.reserved += extra

    def settle(self, ticket: Ticket) -> None:
        """The request is over (its file stored or not): its reservation is released."""
        with self._lock:
            if ticket in self._moving:
                self._moving.remove(ticket)

    def forget(self, sessions) -> None:
        """Sessions whose files were released (built into a dataset, or gone)."""
        with self._lock:
            for session in sessions:
                self._owner.pop(session, None)

    def _check(self, ticket: Ticket, more: int, *, new_file: bool) -> None:
        limits, stored = self.limits, self._stored()
        moving = {t.session for t in self._moving} | {ticket.session}
        for gone in [s for s in self._owner if s not in stored and s not in moving]:
            del self._owner[gone]  # its files were dropped (session over, dataset built)
        if ticket.reserved + more > limits.file_bytes:
            raise UploadRefused(f"a file is larger than {megabytes(limits.file_bytes)} (LAPMUSIC_MAX_MIDI_BYTES); "
                                "upload smaller MIDI files")
        moving_session = [t for t in self._moving if t.session == ticket.session]
        files = stored.get(ticket.session, (0, 0))[0] + len(moving_session) + (1 if new_file else 0)
        if files > limits.session_files:
            raise UploadRefused(f"too many files in this session: at most {limits.session_files} "
                                "(LAPMUSIC_MAX_UPLOAD_FILES); remove some, or build a dataset first")
        used = stored.get(ticket.session, (0, 0))[1] + sum(t.reserved for t in moving_session)
        if used + more > limits.session_bytes:
            raise UploadRefused(f"too much data in this session: at most {megabytes(limits.session_bytes)} "
                                "(LAPMUSIC_MAX_UPLOAD_BYTES); remove some files, or build a dataset first")
        mine = {s for s, c in self._owner.items() if c == ticket.client}
        used = (sum(b for s, (_, b) in stored.items() if s in mine)
                + sum(t.reserved for t in self._moving if t.client == ticket.client))
        if used + more > limits.client_bytes:
            raise UploadRefused(f"too much data uploaded from your address: at most {megabytes(limits.client_bytes)} "
                                "held at once (LAPMUSIC_MAX_UPLOAD_CLIENT_BYTES); build your dataset or close "
                                "other pages first")
        used = sum(b for _, b in stored.values()) + sum(t.reserved for t in self._moving)
        if used + more > limits.server_bytes:
            raise UploadRefused(f"the server holds {megabytes(limits.server_bytes)} of uploads already "
                                "(LAPMUSIC_MAX_UPLOAD_SERVER_BYTES); try again in a few minutes", status=503)
