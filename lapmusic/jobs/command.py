"""One command of a sweep or a job as a child process that dies with the process that started it.

What both engines run (:mod:`lapmusic.jobs.gridrun` in threads here, :mod:`lapmusic.jobs.rayexec` as Ray
tasks); light on purpose: a Ray worker imports it, and the job manager imports the Ray executor.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lapmusic.core.lease import lease_seconds
from lapmusic.core.lock import lock_owner

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the process that started it dies (a killed Ray worker must not
    leave its training behind, holding the run folder)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the lease then frees the folder


def run_command(argv: list[str], log_path: str, env: dict | None = None, wait_free: str | None = None) -> int:
    """Run ``argv`` as a child that dies with this process; its output is appended to ``log_path``.

    Parameters
    ----------
    argv : list of str
        The command (``sys.executable`` is substituted for ``"python"``, so a Ray node uses its own).
    log_path : str
        File that receives stdout and stderr.
    env : dict, optional
        Variables added to this process's environment.
    wait_free : str, optional
        A run folder: first wait (up to a lease and ten seconds) until nobody holds it, e.g. the killed
        previous attempt on another host.

    Returns
    -------
    int
        The exit status; negative when a signal killed it.
    """
    if wait_free:
        deadline = time.monotonic() + lease_seconds() + 10
        while lock_owner(wait_free) is not None and time.monotonic() < deadline:
            time.sleep(1.0)
    full_env = dict(os.environ, **(env or {}))
    package_root = str(Path(__file__).resolve().parent.parent.parent)
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, full_env.get("PYTHONPATH", "")) if p)
    argv = [sys.executable if a == "python" else a for a in argv]
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                env=full_env, preexec_fn=_die_with_parent, close_fds=True)
        return proc.wait()
