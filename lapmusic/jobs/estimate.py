"""How long a queued run will wait and train, as a range, from the runs already measured in the runs folder.

Every run folder with finished epochs is a measurement (:class:`Measured`): its median epoch seconds
(``metrics.jsonl``, epochs >= 1), its set-up (epoch 0's ``elapsed``: pre-training, data loading, the first
evaluation) and how many epochs it ran; a run in its first epoch measures its epoch time from its progress
(the first pair of a class is still training when the next students queue). A new run is estimated (:func:`predict`) from the closest runs there
are: first those of the same shape (dataset, cell, output and its options, batch, data limits), else the same
dataset, cell and output, else the same dataset. Between hidden sizes the epoch time is scaled by the work of
one frame (:func:`frame_work`) to a power fitted on the sizes measured (0.5 when one size is known): small
networks on a CPU cost mostly fixed overhead, large ones their matrix products. A run that stops early
(``patience``) is expected to stop where similar runs stopped. Without any measured run the estimate is a
conservative default, marked rough. Waiting times come from a list schedule: ``S`` slots, the running jobs
free theirs after their remaining time, each queued job (in order) takes the first slot that frees up; done
for the low, middle and high durations, which gives the ranges the pages show.
"""

from __future__ import annotations

import heapq
import math
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from lapmusic import N_KEYS
from lapmusic.core.io import read_json, read_jsonl
from lapmusic.jobs.job import Job
from lapmusic.jobs.runs import candidate_dirs

DEFAULT_EPOCH_SECONDS = 60.0
"""Per epoch when nothing was measured: on the high side, so as not to promise a start that does not come."""
DEFAULT_SETUP_SECONDS = 60.0
TIMING_TTL = 10.0  # seconds the measurements are reused before the run folders are read again
LOAD_SPREAD = 1.25  # the same run on a shared machine: this factor slower or faster from one run to the next
OTHER_SHAPE_SPREAD = 2.0  # runs of other settings (batch, output options) say less: a wider range
DEFAULT_POWER, POWER_RANGE = 0.5, (0.2, 1.0)  # epoch time ~ frame_work ** power between hidden sizes


@dataclass(frozen=True)
class Measured:
    """What one run folder measured: its config, median epoch seconds, set-up seconds, epochs run."""

    config: dict
    epoch_seconds: float
    setup_seconds: float | None
    epochs_done: int
    finished: bool


@dataclass(frozen=True)
class Duration:
    """A run's expected seconds: ``low <= point <= high``; ``basis`` says what they come from:
    ``"same size"``, ``"other sizes"``, ``"other settings"`` or ``"none"`` (the rough default)."""

    low: float
    point: float
    high: float
    basis: str

    @property
    def measured(self) -> bool:
        return self.basis != "none"


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None


def shape_key(config: dict) -> tuple:
    """The settings besides the hidden size and init that make an epoch slower or faster."""
    nade = config.get("output") == "nade"
    return (config.get("dataset"), config.get("cell", "rnn"), config.get("output", "bernoulli"),
            config.get("nade_hidden") if nade else None, bool(config.get("nade_vocab")) and nade,
            bool(config.get("nade_repeat")) and nade, config.get("batch_size"), config.get("bptt"),
            config.get("max_sequences"), config.get("max_train_sequences"))


def frame_work(config: dict) -> float:
    """Multiply-adds of one frame, up to a constant: input, recurrence and output of a ``hidden``-unit network
    (a gated cell does three or four times the recurrent work; a NADE output adds its own layer).

    >>> frame_work({"hidden": 10})
    2760.0
    """
    hidden = float(config.get("hidden") or 128)
    gates = {"gru": 3.0, "lstm": 4.0}.get(config.get("cell"), 1.0)
    work = gates * hidden * (N_KEYS + hidden) + hidden * N_KEYS
    if config.get("output") == "nade":
        nade = float(config.get("nade_hidden") or 0)
        work += hidden * (nade + N_KEYS) + 2.0 * N_KEYS * nade
    return work


def measure_run(run_dir: Path, config: dict | None = None, now: float | None = None) -> Measured | None:
    """The measurement of one run folder; None when it has no finished epoch and is not yet
    :data:`LIVE_EPOCH_SHARE` into its first one (or has no config)."""
    config = config or read_json(run_dir / "config.json")
    if not isinstance(config, dict):
        return None
    rows = read_jsonl(run_dir / "metrics.jsonl")
    seconds = [s for r in rows if _number(r.get("epoch")) and (s := _number(r.get("seconds"))) is not None]
    setup = [s for r in rows if r.get("epoch") == 0 and (s := _number(r.get("elapsed"))) is not None]
    status = read_json(run_dir / "status.json") or {}
    if not seconds:  # a run in its first epoch: the epoch time from its progress so far
        live = _live_epoch_seconds(run_dir, config, status, setup[-1] if setup else None, now)
        return None if live is None else Measured(config, live, setup[-1], 0, False)
    return Measured(config, statistics.median(seconds), setup[-1] if setup else None, len(seconds),
                    status.get("state") == "finished")


LIVE_EPOCH_SHARE = 0.2  # a first epoch this far along measures its epoch time well enough


def _live_epoch_seconds(run_dir: Path, config: dict, status: dict, setup: float | None,
                        now: float | None) -> float | None:
    """Seconds per epoch of a running run from its progress: ``status.json``'s fraction counts the set-up as
    one slot of ``epochs + 1`` (:func:`lapmusic.training.train.train`), and the set-up ended when epoch 0's
    line was written (the time of ``metrics.jsonl``, the only line yet). None before the set-up is done or
    :data:`LIVE_EPOCH_SHARE` of an epoch."""
    fraction, epochs = _number(status.get("fraction")), _number(config.get("epochs"))
    if status.get("state") != "running" or None in (fraction, epochs, setup):
        return None
    try:
        setup_ended = (run_dir / "metrics.jsonl").stat().st_mtime
    except OSError:
        return None
    done = fraction * (epochs + 1) - 1.0  # epochs of training done, the current one in part
    spent = (time.time() if now is None else now) - setup_ended
    return spent / done if done >= LIVE_EPOCH_SHARE and spent > 0 else None


def _closest(config: dict, runs: Sequence[Measured]) -> tuple[list[Measured], bool]:
    """The runs of the closest kind to ``config``, and whether they have its shape."""
    levels = (shape_key, lambda c: shape_key(c)[:3], lambda c: shape_key(c)[:1])
    for n, key in enumerate(levels):
        want = key(config)
        found = [r for r in runs if key(r.config) == want]
        if found:
            return found, n == 0
    return [], False


def _power(runs: Sequence[Measured]) -> float:
    """The exponent of epoch seconds in frame work, least squares over the runs' sizes (clipped)."""
    xs = [math.log(frame_work(r.config)) for r in runs]
    ys = [math.log(max(r.epoch_seconds, 1e-3)) for r in runs]
    if max(xs) - min(xs) < 1e-9:
        return DEFAULT_POWER
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return min(POWER_RANGE[1], max(POWER_RANGE[0], slope))


def _scaled(values: list[tuple[float, float]], work: float, powers: Iterable[float]) -> list[float]:
    """``value * (work / anchor_work) ** p`` from the anchor closest in work (median over runs of that work)."""
    anchor = min({w for w, _ in values}, key=lambda w: abs(math.log(work / w)))
    base = statistics.median(v for w, v in values if w == anchor)
    return [base * (work / anchor) ** p for p in powers]


def predict(config: dict, runs: Sequence[Measured]) -> Duration:
    """A run's duration in seconds from runs already measured.

    Parameters
    ----------
    config : dict
        The run's config (``TrainConfig.to_dict()``).
    runs : sequence of Measured
        The measured runs of the runs folder.

    Returns
    -------
    Duration
        ``low``, ``point``, ``high`` seconds and their basis; the rough default without a run to go by.
    """
    planned = max(0, int(config.get("epochs") or 1))
    found, same_shape = _closest(config, runs)
    if not found:
        point = DEFAULT_SETUP_SECONDS + planned * DEFAULT_EPOCH_SECONDS
        return Duration(point / 10.0, point, point, "none")
    work = frame_work(config)
    same_size = [r for r in found if abs(frame_work(r.config) - work) < 1e-6 * work]
    if same_size:
        epoch = [statistics.median(r.epoch_seconds for r in same_size)] * 3
        basis = "same size"
    else:
        fitted = _power(found) if len({frame_work(r.config) for r in found}) > 1 else None
        lo, hi = (fitted - 0.2, fitted + 0.2) if fitted is not None else POWER_RANGE
        power = fitted if fitted is not None else DEFAULT_POWER
        epoch = sorted(_scaled([(frame_work(r.config), r.epoch_seconds) for r in found], work, (lo, power, hi)))
        basis = "other sizes"
    setups = [r for r in found if r.setup_seconds is not None]
    same_init = [r for r in setups if r.config.get("init") == config.get("init")]  # the LAE's set-up is longer
    setup = (_scaled([(frame_work(r.config), r.setup_seconds) for r in same_init or setups], work, (0.0,))[0]
             if setups else DEFAULT_SETUP_SECONDS)
    epochs = _epochs(config, found, planned)
    spread = LOAD_SPREAD if same_shape else LOAD_SPREAD * OTHER_SHAPE_SPREAD
    low = (setup + epochs[0] * epoch[0]) / spread
    point = setup + epochs[1] * epoch[1]
    high = (setup + epochs[2] * epoch[2]) * spread
    if (cap := _number(config.get("max_seconds"))) is not None:  # the run starts no epoch after its budget
        low, point, high = (min(v, setup + cap + e) for v, e in zip((low, point, high), epoch))
    return Duration(low, point, high, basis if same_shape else "other settings")


def _epochs(config: dict, found: Sequence[Measured], planned: int) -> tuple[int, int, int]:
    """Epochs a run is expected to run (low, point, high): where finished runs with the same patience
    stopped early, else all ``planned``."""
    patience = config.get("patience")
    if patience is None:
        return planned, planned, planned
    stopped = [r.epochs_done for r in found if r.finished and r.config.get("patience") == patience
               and r.epochs_done < int(r.config.get("epochs") or 0)]
    if not stopped:
        return planned, planned, planned
    point = min(planned, int(round(statistics.median(stopped))))
    return min(planned, min(stopped)), point, planned if len(stopped) < 2 else min(planned, max(stopped))


def measure(run_dirs: Iterable, configs: dict | None = None) -> list[Measured]:
    """The measured runs among ``run_dirs`` (``configs`` maps folder -> config, read from disk when missing)."""
    out = []
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        if (found := measure_run(run_dir, (configs or {}).get(run_dir))) is not None:
            out.append(found)
    return out


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
    """Start and finish estimates for the jobs of one runs folder, from the runs measured there.

    Thread-safe for the pages: the measurements are re-read at most every ``ttl`` seconds, by one thread.
    """

    def __init__(self, runs_dir: Path, configs: Callable[[], dict], ttl: float = TIMING_TTL):
        self.runs_dir, self.configs, self.ttl = runs_dir, configs, ttl
        self._measured: tuple[float, list[Measured]] | None = None
        self._lock = threading.Lock()

    def measured(self) -> list[Measured]:
        """The measured runs of the runs folder (cached ``ttl`` seconds)."""
        with self._lock:
            now = time.monotonic()
            if self._measured is None or now - self._measured[0] > self.ttl:
                self._measured = (now, measure(candidate_dirs(self.runs_dir), self.configs()))
            return self._measured[1]

    def estimates(self, running: Sequence[Job], queued: Sequence[Job], slots: int) -> dict[str, dict]:
        """``{job id: {"position", "start_in", "finish_in", "start_range", "finish_range", "measured", "basis"}}``
        for the running jobs and the queued ones (in queue order), in seconds from now; ``position`` is None
        while running, 1 for the next to start; the ranges are ``(low, high)``."""
        now, runs = time.time(), self.measured()
        out: dict[str, dict] = {}
        left: list[tuple[float, float, float]] = []
        for job in running:
            duration = predict(job.config, runs)
            status = read_json(job.run_dir / "status.json") or {}
            fraction = status.get("fraction") if isinstance(status.get("fraction"), (int, float)) else None
            elapsed = now - (job.started_at or now)
            rest = remaining(duration.point, elapsed, fraction)
            if fraction is not None and fraction >= 0.05 and elapsed > 0:
                low, high = rest / LOAD_SPREAD, rest * LOAD_SPREAD
            else:
                low, high = max(2.0, duration.low - elapsed), max(2.0, duration.high - elapsed, rest)
            left.append((low, rest, high))
            out[job.id] = {"position": None, "start_in": 0.0, "finish_in": rest, "start_range": (0.0, 0.0),
                           "finish_range": (low, high), "measured": duration.measured, "basis": duration.basis}
        durations = [predict(j.config, runs) for j in queued]
        plans = [schedule([x[n] for x in left], [(d.low, d.point, d.high)[n] for d in durations], slots)
                 for n in range(3)]
        for n, (job, duration) in enumerate(zip(queued, durations)):
            (start_low, finish_low), (start, finish), (start_high, finish_high) = (p[n] for p in plans)
            out[job.id] = {"position": n + 1, "start_in": start, "finish_in": finish,
                           "start_range": (start_low, start_high), "finish_range": (finish_low, finish_high),
                           "measured": duration.measured, "basis": duration.basis}
        return out
