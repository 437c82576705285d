"""Live pages share the server fairly: how often each may refresh, and in which order.

Every live Training tab re-reads its runs and redraws its curves on each refresh, in the server's threads.
:class:`PollBudget` stretches the refresh interval so that all live pages together stay within a share of
one CPU core; :class:`FairGate` lets the refreshes in first come, first served, a few at a time, so that no
page is starved by the others. One of each per server process: :data:`poll_budget`, :data:`refresh_gate`.
"""

from __future__ import annotations

import os
import threading
import time


def poll_seconds() -> float:
    """How often live views refresh at most (``LAPMUSIC_POLL_SECONDS``, default 1.5 s, at least 0.2 s)."""
    try:
        return max(0.2, float(os.environ.get("LAPMUSIC_POLL_SECONDS", "1.5")))
    except ValueError:
        return 1.5


POLL_CPU_SHARE = 0.25
"""The share of one CPU core that the live Training tabs of all pages together may use for their refreshes."""
POLL_FORGET_SECONDS = 60.0  # a page that has not refreshed for this long no longer counts (closed, or done)


class PollBudget:
    """How often each live page may refresh so that all of them together stay within a CPU budget.

    The interval is ``max(base, pages * cpu / share)``: ``pages`` that refreshed in the last
    :data:`POLL_FORGET_SECONDS`, ``cpu`` the CPU seconds of one refresh (a moving average of what the pages
    report), ``share`` :data:`POLL_CPU_SHARE`. Few or cheap pages keep the base interval.
    """

    def __init__(self, share: float = POLL_CPU_SHARE, first_cpu: float = 0.04):
        self.share, self.cpu = share, first_cpu
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def seconds(self, page: str, base: float, now: float | None = None) -> float:
        """The refresh interval for ``page`` (and note that it polls); called when a page draws its live view."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._stamp(page, now)
            pages, cpu = len(self._seen), self.cpu
        return max(base, pages * cpu / self.share)

    def record(self, page: str, cpu_seconds: float, now: float | None = None) -> None:
        """``page`` refreshed, which took ``cpu_seconds`` of its thread's CPU time (moving average over ~10
        refreshes). The page counts as polling from here too: a page that only refreshes its fragment never
        calls :meth:`seconds` again and would otherwise drop out after :data:`POLL_FORGET_SECONDS`."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._stamp(page, now)
            self.cpu += 0.1 * (max(0.0, cpu_seconds) - self.cpu)

    def _stamp(self, page: str, now: float) -> None:
        self._seen[page] = now
        for other, seen in list(self._seen.items()):
            if now - seen > POLL_FORGET_SECONDS:
                del self._seen[other]


poll_budget = PollBudget()  # one per server process


class FairGate:
    """At most ``slots`` page refreshes at once, let in strictly in the order they arrived.

    Threads that wait for the GIL or a lock favour whichever ran last; waiting here in a queue costs no CPU
    and gives every page its turn.
    """

    def __init__(self, slots: int):
        self.slots = slots
        self._cond = threading.Condition()
        self._tickets = 0  # handed out
        self._done = 0  # finished

    @property
    def arrived(self) -> int:
        """How many refreshes have arrived so far (inside, waiting or done)."""
        with self._cond:
            return self._tickets

    def __enter__(self) -> "FairGate":
        with self._cond:
            ticket = self._tickets
            self._tickets += 1
            self._cond.wait_for(lambda: ticket < self._done + self.slots)
        return self

    def __exit__(self, *exc) -> None:
        with self._cond:
            self._done += 1
            self._cond.notify_all()


refresh_gate = FairGate(slots=4)  # one per server process
