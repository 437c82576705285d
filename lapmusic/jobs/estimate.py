"""How long a queued run will wait and train: measured epoch times and a slot schedule.

The duration of a run with ``E`` epochs is estimated as ``setup + E * epoch`` where, over the finished
epochs of earlier runs with the same dataset and hidden size (``metrics.jsonl``), ``epoch`` is the median
of their ``seconds`` (epochs >= 1) and ``setup`` the median of epoch 0's ``elapsed`` (pre-training, data
loading and the first evaluation). Without such runs a conservative default is used and the estimate is
marked rough. Waiting times come from a list schedule: ``S`` slots, the running jobs free theirs after
their remaining time, each queued job (in order) takes the first slot that frees up.
"""

from __future__ import annotations

import heapq
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from lapmusic.core.io import read_json, read_jsonl
from lapmusic.jobs.job import Job
from lapmusic.jobs.runs import candidate_dirs

DEFAULT_EPOCH_SECONDS = 60.0
"""Per epoch when nothing was measured: on the high side, so as not to promise a start that does not come."""
DEFAULT_SETUP_SECONDS = 60.0
TIMING_TTL = 30.0  # seconds a measured timing is reused before the metrics.jsonl files are read again


@dataclass(frozen=True)
class Timing:
    epoch_seconds: float
    setup_seconds: float
    runs: int  # how many runs the medians come from (0: the defaults)

    @property
    def measured(self) -> bool:
        return self.runs > 0

    def duration(self, epochs: int) -> float:
        return self.setup_seconds + max(0, int(epochs)) * self.epoch_seconds


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None


def measure(run_dirs: Iterable, dataset: str, hidden: int, configs: dict | None = None) -> Timing:
    """Medians over the runs in ``run_dirs`` whose config has this dataset and hidden size.

    ``configs`` maps run folder -> config dict (read from ``config.json`` when missing).
    """
    epochs: list[float] = []
    setups: list[float] = []
    runs = 0
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        config = (configs or {}).get(run_dir) or read_json(run_dir / "config.json") or {}
        if config.get("dataset") != dataset or config.get("hidden") != hidden:
            continue
        rows = read_jsonl(run_dir / "metrics.jsonl")
        seconds = [s for r in rows if _number(r.get("epoch")) and (s := _number(r.get("seconds"))) is not None]
        setup = [s for r in rows if r.get("epoch") == 0 and (s := _number(r.get("elapsed"))) is not None]
        if seconds:
            runs += 1
            epochs.extend(seconds)
            setups.extend(setup)
    if not epochs:
        return Timing(DEFAULT_EPOCH_SECONDS, DEFAULT_SETUP_SECONDS, 0)
    setup = statistics.median(setups) if setups else DEFAULT_SETUP_SECONDS
    return Timing(statistics.median(epochs), setup, runs)


def remaining(duration: float, elapsed: float, fraction: float | None = None) -> float:
    """Seconds left of a running job: extrapolated from its progress once it is past 5 %, else
    ``duration - elapsed`` (never below a few seconds: a job is not done until it says so)."""
    if fraction is not None and fraction >= 0.05 and elapsed > 0:
        return max(2.0, elapsed * (1.0 - fraction) / fraction)
    return max(2.0, duration - elapsed)


def schedule(running_left: Sequence[float], queued: Sequence[float], slots: int) -> list[tuple[float, float]]:
    """``(start, finish)`` in seconds from now for each queued duration, in queue order.

    >>> schedule([10.0], [5.0, 5.0], slots=1)
    [(10.0, 15.0), (15.0, 20.0)]
    >>> schedule([], [5.0, 5.0, 5.0], slots=2)
    [(0.0, 5.0), (0.0, 5.0), (5.0, 10.0)]
    """
    slots = max(1, int(slots))
    free = sorted(list(running_left)[:slots]) + [0.0] * max(0, slots - len(running_left))
    # More running jobs than slots (slots lowered while they run): the extra ones delay the queue too.
    for extra in list(running_left)[slots:]:
        free.sort()
        free[0] += extra
    heapq.heapify(free)
    out = []
    for duration in queued:
        start = heapq.heappop(free)
        finish = start + max(0.0, duration)
        out.append((start, finish))
        heapq.heappush(free, finish)
    return out


class Estimator:
    """Start and finish estimates for the jobs of one runs folder, from timings measured there.

    Thread-safe enough for the pages: a timing is a value, recomputed at most every ``ttl`` seconds per
    (dataset, hidden size); two threads that recompute it at once get the same answer.
    """

    def __init__(self, runs_dir: Path, configs: Callable[[], dict], ttl: float = TIMING_TTL):
        self.runs_dir, self.configs, self.ttl = runs_dir, configs, ttl
        self._timings: dict[tuple, tuple[float, Timing]] = {}

    def timing(self, dataset: str, hidden: int) -> Timing:
        """Measured epoch and set-up seconds for runs of this size (cached ``ttl`` seconds)."""
        key = (dataset, hidden)
        now = time.monotonic()
        cached = self._timings.get(key)
        if cached is None or now - cached[0] > self.ttl:
            cached = (now, measure(candidate_dirs(self.runs_dir), dataset, hidden, self.configs()))
            self._timings[key] = cached
        return cached[1]

    def estimates(self, running: Sequence[Job], queued: Sequence[Job], slots: int) -> dict[str, dict]:
        """``{job id: {"position", "start_in", "finish_in", "measured"}}`` for the running jobs and the queued
        ones (in queue order), in seconds from now; ``position`` is None while running, 1 for the next to start."""
        now = time.time()
        out: dict[str, dict] = {}
        left = []
        for job in running:
            timing = self.timing(job.config.get("dataset"), job.config.get("hidden"))
            status = read_json(job.run_dir / "status.json") or {}
            fraction = status.get("fraction") if isinstance(status.get("fraction"), (int, float)) else None
            rest = remaining(timing.duration(job.config.get("epochs", 1)), now - (job.started_at or now), fraction)
            left.append(rest)
            out[job.id] = {"position": None, "start_in": 0.0, "finish_in": rest, "measured": timing.measured}
        timings = [self.timing(j.config.get("dataset"), j.config.get("hidden")) for j in queued]
        durations = [t.duration(j.config.get("epochs", 1)) for t, j in zip(timings, queued)]
        for n, (job, timing, (start, finish)) in enumerate(zip(queued, timings, schedule(left, durations, slots))):
            out[job.id] = {"position": n + 1, "start_in": start, "finish_in": finish, "measured": timing.measured}
        return out
