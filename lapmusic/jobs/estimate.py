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
from dataclasses import dataclass
from typing import Iterable, Sequence

from lapmusic.core.io import read_jsonl

DEFAULT_EPOCH_SECONDS = 60.0
"""Per epoch when nothing was measured: the Bach set at 128 hidden units takes ~5-15 s per epoch on a
2-core CPU, so this over-estimates rather than promise a start that does not come."""
DEFAULT_SETUP_SECONDS = 60.0


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
    from pathlib import Path

    from lapmusic.core.io import read_json

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
