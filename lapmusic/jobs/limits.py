"""How much the job manager may run: worker slots for the machine, new runs per browser session and client.

- **Slots**: ``$LAPMUSIC_MAX_JOBS``, else one per CUDA GPU, else half the CPU cores (at least 1).
- **Quotas**: only *new* runs count (following an identical run is free). ``$LAPMUSIC_MAX_JOBS_PER_SESSION``
  (default 2, one LAE/random pair) per browser session and ``$LAPMUSIC_MAX_JOBS_PER_CLIENT`` (default 4: two
  browsers per person) per client address; 0 = no limit (a class behind one school address). A browser
  on the server machine itself (a loopback address, also IPv4-mapped: ``::ffff:127.0.0.1``) is not
  limited per client (:func:`client_address`).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass
from typing import Iterable

from lapmusic.core.errors import LapMusicError
from lapmusic.jobs.job import Job

log = logging.getLogger(__name__)

SESSION_ENV, CLIENT_ENV = "LAPMUSIC_MAX_JOBS_PER_SESSION", "LAPMUSIC_MAX_JOBS_PER_CLIENT"


def env_int(name: str, default: int | None) -> int | None:
    """The integer in ``$name``; ``default`` when it is unset, empty or not an integer (with a warning)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        log.warning("ignoring %s=%r (not an integer)", name, text)
        return default


def cuda_devices() -> int:
    """Number of CUDA GPUs (0 without CUDA or without torch)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken CUDA setup means CPU
        return 0


def default_max_jobs() -> int:
    """``$LAPMUSIC_MAX_JOBS``, else one slot per GPU, else ``cpu_count // 2`` (at least 1): a training
    step uses about two cores well, and the server keeps some for the pages."""
    value = env_int("LAPMUSIC_MAX_JOBS", None)
    if value is not None:
        return max(1, value)
    gpus = cuda_devices()
    return gpus if gpus else max(1, (os.cpu_count() or 1) // 2)


def default_max_per_session() -> int | None:
    """``$LAPMUSIC_MAX_JOBS_PER_SESSION`` (default 2); None for no limit (0)."""
    value = env_int(SESSION_ENV, 2)
    return None if value is None or value <= 0 else value


def default_max_per_client() -> int | None:
    """``$LAPMUSIC_MAX_JOBS_PER_CLIENT`` (default 4); None for no limit (0)."""
    value = env_int(CLIENT_ENV, 4)
    return None if value is None or value <= 0 else value


def client_address(ip: str | None) -> str | None:
    """The client a per-computer quota counts: the browser's address, normalized.

    Parameters
    ----------
    ip : str or None
        The address the web server reports (``"10.0.0.5"``, ``"::ffff:10.0.0.5"``, ``"::1"``).

    Returns
    -------
    str or None
        The IPv4 address inside an IPv4-mapped IPv6 one, the compressed form of any other address, the text
        itself when it is no address; None for no address and for a loopback address (a browser on the
        server machine: not limited per computer).
    """
    text = (ip or "").strip()
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # "%eth0": an IPv6 zone names no other client
    except ValueError:
        return text
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return None if address.is_loopback else str(address)


@dataclass(frozen=True)
class Quotas:
    """How many new runs one browser session (``per_session``) and one client IP (``per_client``) may have
    queued or training at once; None means no limit."""

    per_session: int | None
    per_client: int | None

    @classmethod
    def from_env(cls) -> "Quotas":
        return cls(default_max_per_session(), default_max_per_client())

    def slots_left(self, active: Iterable[Job], session: str, client: str | None = None) -> int:
        """How many more new runs ``session`` (from ``client``) may queue, given the ``active`` jobs."""
        active = list(active)
        return max(0, min(self._session_left(active, session), self._client_left(active, client)))

    def _session_left(self, active: list[Job], session: str | None) -> int:
        if self.per_session is None or session is None:
            return 1 << 30
        return self.per_session - sum(1 for j in active if j.creator == session)

    def _client_left(self, active: list[Job], client: str | None) -> int:
        if self.per_client is None or not client:
            return 1 << 30
        return self.per_client - sum(1 for j in active if j.client == client)

    def check(self, active: Iterable[Job], session: str | None, client: str | None, new: int = 1) -> None:
        """Raise :class:`LapMusicError` when ``session`` (from ``client``) may not queue ``new`` more new runs.

        The message names the limit that was reached, its setting, and what to do.
        """
        if session is None or new <= 0:
            return
        active = list(active)
        mine = "" if new == 1 else f" ({new} asked for at once)"
        if self._session_left(active, session) < new:
            raise LapMusicError(
                f"this browser may have at most {self.per_session} new runs queued or training at once{mine}; "
                f"wait for one to finish or stop it on the Training tab (the teacher sets the limit with "
                f"{SESSION_ENV})"
            )
        if self._client_left(active, client) < new:
            raise LapMusicError(
                f"this computer ({client}) may have at most {self.per_client} new runs queued or training at "
                f"once, from all its browsers together{mine}; wait for one to finish or stop it on the Training "
                f"tab (the teacher sets the limit with {CLIENT_ENV}, 0 switches it off for a class behind one "
                "school address)"
            )
