"""How much the job manager may run: worker slots for the machine, new runs per browser session and client.

- **Slots**: ``$LAPMUSIC_MAX_JOBS``, else one per CUDA GPU, else half the CPU cores (at least 1).
- **Quotas**: only *new* runs count (following an identical run is free). ``$LAPMUSIC_MAX_JOBS_PER_SESSION``
  (default 2, one LAE/random pair) per browser session and ``$LAPMUSIC_MAX_JOBS_PER_CLIENT`` (default 4: two
  browsers per person) per client IP; 0 = no limit. Browsers on the server machine itself have no IP in
  Streamlit and are not limited per client.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Iterable

from lapmusic.core.errors import LapMusicError
from lapmusic.jobs.job import Job

log = logging.getLogger(__name__)


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
    value = env_int("LAPMUSIC_MAX_JOBS_PER_SESSION", 2)
    return None if value is None or value <= 0 else value


def default_max_per_client() -> int | None:
    """``$LAPMUSIC_MAX_JOBS_PER_CLIENT`` (default 4); None for no limit (0)."""
    value = env_int("LAPMUSIC_MAX_JOBS_PER_CLIENT", 4)
    return None if value is None or value <= 0 else value


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
        left = 1 << 30
        if self.per_session is not None:
            left = min(left, self.per_session - sum(1 for j in active if j.creator == session))
        if self.per_client is not None and client:
            left = min(left, self.per_client - sum(1 for j in active if j.client == client))
        return max(0, left)

    def check(self, active: Iterable[Job], session: str | None, client: str | None) -> None:
        """Raise :class:`LapMusicError` when ``session`` may not queue one more new run."""
        if session is not None and self.slots_left(active, session, client) <= 0:
            raise LapMusicError(
                f"you already have {self.per_session} new runs queued or training (from this browser at most "
                f"{self.per_session}, from this computer at most {self.per_client}); wait for one to "
                "finish or stop it, then start another"
            )
