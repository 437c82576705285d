"""Phases 1 and 2 of ``bench_classroom.py`` with HTTP students (``stclass.py``) instead of Chromium pages.

``python benchmarks/bench_classroom.py --clients http``: the same server, workers, settings and JSON keys;
each student is a :class:`stclass.Student` (the static files of a first visit over HTTP, then Streamlit's
websocket protocol as the browser speaks it), all of them in one event loop of the benchmark's process,
so the server's two cores are left to the server and its training workers (in a classroom the students'
browsers run on their own computers). Not measured this way: greying (a browser's drawing) and phase 3
(restart; measured with Chromium, its targets do not depend on the client).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time

from stclass import Student, click_all, wait_for


class Loop:
    """An asyncio event loop in a thread of its own: the students live there while the benchmark's main
    thread measures (``run`` waits for one coroutine)."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class LoadSampler:
    """The 1-minute load average every ``every`` seconds, in a thread (its highest value is reported)."""

    def __init__(self, every: float = 2.0):
        self.values: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(every,), daemon=True)
        self._thread.start()

    def _sample(self, every: float) -> None:
        while not self._stop.wait(every):
            self.values.append(os.getloadavg()[0])

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(5)
        return {"max": max(self.values, default=None), "last": self.values[-1] if self.values else None}


class CurveWatch:
    """When the first loss-curve point exists on disk: the first line of any run's ``metrics.jsonl`` (polled
    every 0.2 s, in a thread). A page can draw its first curve only after that moment; what comes after it
    is the server's delay in showing it."""

    def __init__(self, runs_dir):
        self.runs_dir, self.at = runs_dir, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while self.at is None and not self._stop.wait(0.2):
            for path in self.runs_dir.glob("*/metrics.jsonl"):
                try:
                    if path.stat().st_size > 0:
                        self.at = time.monotonic()
                        break
                except OSError:
                    pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def estimate_snapshot(runs_dir) -> tuple[float, dict[str, dict]]:
    """The estimates the server's pages show now, computed the same way (:class:`lapmusic.jobs.estimate.Estimator`
    over the same runs folder, queue order and slots), and the wall time they were taken at."""
    from lapmusic.core.io import read_json
    from lapmusic.jobs.estimate import Estimator
    from lapmusic.jobs.job import Job
    from lapmusic.jobs.limits import default_max_jobs
    from lapmusic.jobs.runs import list_runs

    order = [e["run"] for e in (read_json(runs_dir / ".lapmusic" / "queue.json") or {}).get("queue", [])]
    running = []
    for summary in list_runs(runs_dir):
        if summary.state == "running" and (job := Job.from_folder(summary.run_dir)) is not None:
            job.started_at = (read_json(summary.run_dir / "worker.json") or {}).get("started")
            running.append(job)
    queued = [job for name in order if (job := Job.from_folder(runs_dir / name)) is not None]
    taken = time.time()
    return taken, Estimator(runs_dir, dict).estimates(running, queued, default_max_jobs())


def estimate_accuracy(runs_dir, taken: float, estimates: dict[str, dict], timeout: float) -> dict:
    """Wait (at most ``timeout`` s) for the runs of ``estimates`` to end, then compare each one's real time
    (its last ``status.json`` update minus ``taken``) with its estimate: the fraction within 2x of the middle
    estimate and inside the range, over the queued runs (and over all of them)."""
    from lapmusic.core.io import read_json

    deadline = time.monotonic() + timeout
    ended: dict[str, float] = {}
    while len(ended) < len(estimates) and time.monotonic() < deadline:
        for name in estimates:
            status = read_json(runs_dir / name / "status.json") or {}
            if name not in ended and status.get("state") in ("finished", "failed", "cancelled"):
                ended[name] = float(status.get("updated") or time.time())
        time.sleep(1.0)
    rows = []
    for name, e in estimates.items():
        real = ended[name] - taken if name in ended else None
        rows.append({"run": name, "position": e["position"], "basis": e["basis"], "real_s": real and round(real, 1),
                     "estimate_s": round(e["finish_in"], 1),
                     "range_s": [round(v, 1) for v in e["finish_range"]],
                     "ratio": real and round(real / max(e["finish_in"], 1e-9), 2)})

    def share(selected, test):
        done = [r for r in selected if r["real_s"] is not None]
        return {"runs": len(selected), "ended": len(done),
                "fraction": round(sum(1 for r in done if test(r)) / len(done), 3) if done else None}

    queued = [r for r in rows if r["position"] is not None]
    within2 = lambda r: 0.5 <= r["ratio"] <= 2.0  # noqa: E731 - a test passed twice
    in_range = lambda r: r["range_s"][0] <= r["real_s"] <= r["range_s"][1]  # noqa: E731
    return {"queued_within_2x": share(queued, within2), "queued_in_range": share(queued, in_range),
            "all_within_2x": share(rows, within2), "runs": rows}


async def _open(url: str, count: int, assets):
    stop = asyncio.Event()
    pupils = [Student(url, name=f"s{n}", assets=assets) for n in range(count)]
    return pupils, stop, [asyncio.ensure_future(p.run(stop)) for p in pupils]


async def _reports(pupils):
    now = time.monotonic()
    return [p.report(now) for p in pupils]


async def _silences(pupils, start: float, end: float) -> list[float]:
    return [p.longest_silence(start, end) for p in pupils]


async def _close(stop, tasks):
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)


def class_on_defaults(args, server, runs_dir, result: dict, assets, summary, run_folders) -> None:
    """Phase 1: ``--students`` pages load at once and press Train on the defaults within ``--spread`` s."""
    loop, sampler, watch = Loop(), LoadSampler(), CurveWatch(runs_dir)
    try:
        pupils, stop, tasks = loop.run(_open(server.url, args.students, assets))
        loop.run(click_all(pupils, args.spread))
        result["phase1_load_average_after_clicks"] = os.getloadavg()
        loop.run(wait_for(pupils, args.deadline, "curve"))
        reports = loop.run(_reports(pupils))
        clicked = [p.clicked_at for p in pupils if p.clicked_at is not None]
        result["phase1_page_load_s"] = summary([r["load_train_button_s"] for r in reports])
        result["phase1_page_load_finished_s"] = summary([r["load_finished_s"] for r in reports])
        result["phase1_page_assets_s"] = summary([r["load_assets_s"] for r in reports])
        result["phase1_clicks_failed"] = len(pupils) - len(clicked)
        result["phase1_click_spread_s"] = round(max(clicked) - min(clicked), 2) if clicked else None
        result["phase1_first_curve_s"] = summary([r["first_curve_s"] for r in reports])
        # The same, from the moment the first curve point existed on disk (the worker wrote it): the server's
        # delay in showing it, which does not depend on how long the run took to set up.
        last_click = max(clicked) if clicked else None
        result["phase1_curve_on_disk_after_last_click_s"] = (
            None if watch.at is None or last_click is None else round(watch.at - last_click, 2))
        result["phase1_first_curve_after_on_disk_s"] = summary(
            [p.first_curve_at - watch.at for p in pupils if p.first_curve_at is not None and watch.at is not None])
        result["phase1_first_curve_each_s"] = [r["first_curve_s"] for r in reports]
        without = [r for r, p in zip(reports, pupils) if p.clicked_at is not None and r["first_curve_s"] is None]
        result["phase1_without_curve"] = len(without)
        result["phase1_pages_without_curve"] = without
        result["phase1_pages_whose_websocket_reconnected"] = sum(r["reconnects"] > 0 for r in reports)
        result["phase1_messages_received"] = summary([r["received"] for r in reports])
        result["phase1_auto_reruns_sent"] = summary([r["auto_reruns_sent"] for r in reports])
        if args.hold > 0:  # the class keeps watching: does every page keep getting its refreshes?
            held = time.monotonic()
            time.sleep(args.hold)
            end = time.monotonic()
            silences = loop.run(_silences(pupils, held, end))
            result["phase1_hold_s"] = args.hold
            result["phase1_hold_longest_silence_s"] = summary(silences)
            result["phase1_hold_load_average"] = os.getloadavg()
        if without:
            server.dump_threads()  # into the server log: what its threads were doing at the deadline
            result["phase1_thread_dump"] = str(server.log_path)
        result["phase1_run_folders"] = len(run_folders(runs_dir))
        loop.run(_close(stop, tasks))
    finally:
        watch.stop()
        result["phase1_load_average_max"] = sampler.stop()["max"]
        loop.close()


def different_settings(args, server, runs_dir, result: dict, assets, summary, run_folders,
                       server_side_loads, static: set) -> None:
    """Phase 2: ``--settings`` sessions press Train on different hidden sizes (one a second); the seconds to
    their queue position and estimate; then, while they train and their pages keep refreshing, ``--loads``
    fresh page loads without a browser (HTTP files of a first visit + the app's script run)."""
    loop, sampler = Loop(), LoadSampler()
    try:
        pupils, stop, tasks = loop.run(_open(server.url, args.settings, assets))
        loop.run(click_all(pupils, float(args.settings), numbers=lambda n: {"Hidden units": 16 + 8 * n}))
        loop.run(wait_for(pupils, 60.0, "queue"))
        taken, estimates = estimate_snapshot(runs_dir)  # what the pages show once every run is queued
        reports = loop.run(_reports(pupils))
        result["phase2_queue_estimate_s"] = summary([r["queue_estimate_s"] for r in reports])
        result["phase2_without_queue_estimate"] = [r for r in reports if r["queue_estimate_s"] is None]
        result["phase2_runs_training"] = sum(1 for s in run_folders(runs_dir).values() if s == "running")
        # The eight pages stay open and keep refreshing their Training tabs (in the loop's thread) meanwhile.
        result.update(server_side_loads(server.url, args.loads, static))
        result["phase2_runs_training_after"] = sum(1 for s in run_folders(runs_dir).values() if s == "running")
        reports = loop.run(_reports(pupils))
        result["phase2_open_pages_reconnected"] = sum(r["reconnects"] > 0 for r in reports)
        result["phase2_open_pages_auto_reruns_sent"] = summary([r["auto_reruns_sent"] for r in reports])
        result["phase2_open_pages_seconds_since_last_received"] = summary(
            [r["seconds_since_last_received"] for r in reports])
        loop.run(_close(stop, tasks))
        if args.estimate_wait > 0:  # the estimates against the real times: wait for the runs to end
            result["phase2_estimates"] = estimate_accuracy(runs_dir, taken, estimates, args.estimate_wait)
            print("phase 2 estimates:", json.dumps({k: v for k, v in result["phase2_estimates"].items()
                                                    if k != "runs"}), flush=True)
    finally:
        result["phase2_load_average_max"] = sampler.stop()["max"]
        loop.close()
