"""How long the app's default demo takes: the default pair (Bach, both inits, the sidebar's default preset)
trained the way the app trains it, by the job manager's worker processes, from the click to both finished.

The configs are the sidebar's defaults (:func:`lapmusic.ui.defaults.app_defaults`,
``lapmusic.ui.sidebar.Settings.configs``), submitted to a :class:`lapmusic.jobs.manager.JobManager` on a fresh
runs folder as the Train button does; the wall time runs from the submit to the second run's end. Printed per
run: epochs trained, why it stopped, its training seconds, pre-training seconds and total seconds inside the
worker. The machine's load average is printed before and after: timings on a loaded machine are not the quiet
machine's (the target: within 90 s on a quiet 2-core machine). The Bach set must be built once first
(``lapmusic datasets prepare bach``).

    python benchmarks/bench_demo.py                 # the default preset, the app's worker slots
    python benchmarks/bench_demo.py --preset paper --max-jobs 2 --json-out demo.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", help="the sidebar's preset (default: the app's default)")
    parser.add_argument("--max-jobs", type=int, help="worker slots (default: the app's, LAPMUSIC_MAX_JOBS or cores/2)")
    parser.add_argument("--runs-dir", help="runs folder (default: a temporary one, removed)")
    parser.add_argument("--json-out", help="also write the figures as JSON")
    args = parser.parse_args()

    from lapmusic.jobs.manager import JobManager
    from lapmusic.ui.defaults import app_defaults
    from lapmusic.ui.sidebar import Settings

    defaults = app_defaults()
    fields = {f.name for f in dataclasses.fields(Settings)}
    values = {k: v for k, v in defaults.items() if k in fields}
    if args.preset:
        from lapmusic.ui.defaults import preset_widgets

        values.update(preset_widgets(args.preset), preset=args.preset)
    configs = [c.to_dict() for c in Settings(**values).configs()]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        manager = JobManager(args.runs_dir or tmp, max_jobs=args.max_jobs)
        try:
            started = time.perf_counter()
            jobs = [manager.submit(config, session="bench", group="demo") for config in configs]
            done = [manager.wait(job.id) for job in jobs]
            wall = time.perf_counter() - started
            finals = [json.loads((Path(job.run_dir) / "final.json").read_text()) for job in done]
        finally:
            manager.close()
    result = {
        "preset": values.get("preset"), "dataset": values["dataset"], "max_jobs": manager.max_jobs,
        "cpu_count": os.cpu_count(), "wall_seconds": wall, "load_before": load_before, "load_after": os.getloadavg(),
        "runs": [{k: f.get(k) for k in ("init", "epochs", "best_epoch", "stopped", "seconds", "pretrain_seconds",
                                         "total_seconds", "best_valid_nll", "nll")} for f in finals],
    }
    print(f"default pair ({result['preset']} preset, {result['dataset']}), {result['max_jobs']} worker slot(s) on "
          f"{result['cpu_count']} cores: {wall:.1f} s from submit to both finished")
    for run in result["runs"]:
        print(f"  {run['init']:<7} epochs {run['epochs']:3d} ({run['stopped']}), best {run['best_epoch']}, training "
              f"{run['seconds']:.1f} s, pre-training {run['pretrain_seconds']:.1f} s, in the worker "
              f"{run['total_seconds']:.1f} s; test NLL {run['nll']:.3f}")
    print("load average (1, 5, 15 min) before {:.1f} {:.1f} {:.1f}, after {:.1f} {:.1f} {:.1f}".format(
        *load_before, *result["load_after"]))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
