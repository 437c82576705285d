"""What a process has used so far: its peak resident memory and its CPU time in user and kernel mode."""

from __future__ import annotations

import resource
import sys


def process_usage() -> dict:
    """The calling process's resource use since it started (``getrusage(RUSAGE_SELF)``).

    Returns
    -------
    dict
        ``peak_rss_mb``: the largest resident set so far, in MiB (Linux reports KiB, macOS bytes);
        ``cpu_user_s`` and ``cpu_system_s``: CPU seconds in user and kernel mode; ``kernel_share``: the kernel's
        part of the CPU time, in [0, 1] (0 for a process that has used none).
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    scale = 2**20 if sys.platform == "darwin" else 2**10
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "peak_rss_mb": usage.ru_maxrss / scale,
        "cpu_user_s": usage.ru_utime,
        "cpu_system_s": usage.ru_stime,
        "kernel_share": usage.ru_stime / cpu if cpu > 0 else 0.0,
    }
