"""Who holds a run folder, in terms that work across hosts: host names, leases and their records.

:mod:`lapmusic.core.lock` writes and reads the records; the job workers name their host the same way.
"""

from __future__ import annotations

import json
import os
import socket
import time

LEASE_SECONDS = 120.0
"""Default lease: as long as the job manager's stall limit, since a long LAPACK call holding the GIL also
silences the renewing thread."""
RECORD_BYTES = 512  # records are padded to this size so a renewal overwrites in place, never truncates


def host_name() -> str:
    """This host's name in lock and worker records: ``$LAPMUSIC_HOST``, else ``socket.gethostname()``."""
    return os.environ.get("LAPMUSIC_HOST", "").strip() or socket.gethostname()


def lease_seconds() -> float:
    """The lease a holder of this process records: ``$LAPMUSIC_LEASE_SECONDS``, else :data:`LEASE_SECONDS`."""
    try:
        value = float(os.environ.get("LAPMUSIC_LEASE_SECONDS", "") or LEASE_SECONDS)
    except ValueError:
        return LEASE_SECONDS
    return value if value > 0 else LEASE_SECONDS


def use_flock() -> bool:
    """False when ``$LAPMUSIC_LOCK_FLOCK`` is 0: a shared file system whose locks do not reach other hosts."""
    return os.environ.get("LAPMUSIC_LOCK_FLOCK", "1").strip() not in ("0", "no", "false")


def encode_record(owner: dict) -> bytes:
    """``owner`` as one JSON line padded to :data:`RECORD_BYTES`."""
    data = json.dumps(owner).encode()
    return data + b" " * max(0, RECORD_BYTES - 1 - len(data)) + b"\n"


def lease_fresh(owner: dict, now: float | None = None) -> bool:
    """True while the record's heartbeat (its ``since`` for a record written before leases) is younger than its
    lease (``$LAPMUSIC_LEASE_SECONDS`` of this process when it names none)."""
    beat = owner.get("heartbeat", owner.get("since"))
    lease = owner.get("lease")
    if not isinstance(beat, (int, float)):
        return False
    lease = float(lease) if isinstance(lease, (int, float)) and lease > 0 else lease_seconds()
    return (now or time.time()) - beat <= lease
