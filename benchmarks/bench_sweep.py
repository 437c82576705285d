"""The 12-run JSB grid with ``--engine local`` and ``--engine ray``: the same table, Ray's overhead, and Ray
workers killed mid-grid.

Three passes over one grid (init lae/random x two hidden sizes x three seeds, a small budget), each in its own
folder under ``--out``, run one after the other as ``lapmusic sweep`` processes:

- ``local``: ``--engine local --jobs J``;
- ``ray``: ``--engine ray --cpus J``: a local Ray started on demand (its start-up is part of the wall time,
  and measured alone as ``ray_start_s``);
- ``kill``: the Ray pass again while a Ray worker process running a training task is SIGKILLed every
  ``--kill-every`` seconds (``--kills`` in all).

Printed as JSON: wall seconds, ``ray_overhead`` = ray / local - 1, whether the Markdown tables are identical,
and for the kill pass the runs finished, the retries, and the epochs lost or duplicated (each run's
``metrics.jsonl`` against its final epoch, as ``bench_killloop.py`` counts them). A loaded machine moves the
wall times: compare the ratio, and run with nothing else on the cores when you can::

    LAPMUSIC_DATA_DIR=/path/to/datasets python benchmarks/bench_sweep.py --out /tmp/bench_sweep
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def grid_argv(out: Path, args) -> list[str]:
    return [sys.executable, "-m", "lapmusic.cli", "sweep", "--out", str(out), "--seeds", "0,1,2",
            "--progress-every", "60", "--axis", "init=lae,random", "--axis", f"hidden={args.hidden}",
            "--base", "dataset=jsb", f"epochs={args.epochs}", f"max_train_sequences={args.max_train}",
            "batch_size=8", "device=cpu", "patience=null"]


def ray_worker_parents() -> list[tuple[int, str]]:
    """``(pid, run folder)`` of the Ray worker processes whose child is a training worker
    (``python -m lapmusic.jobs.worker RUNDIR``)."""
    parents = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "lapmusic.jobs.worker" not in cmdline:
                continue
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            parent = (Path("/proc") / str(ppid) / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if "ray" in parent or "default_worker" in parent:
            parents.append((ppid, cmdline.split()[-1]))
    return parents


def run_pass(name: str, argv: list[str], out: Path, kills: int = 0, kill_every: float = 0.0) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    killed = []
    with open(out / "sweep.stderr", "w") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT)
        next_kill = started + kill_every
        while proc.poll() is None:
            time.sleep(0.5)
            if len(killed) < kills and time.monotonic() >= next_kill and (parents := ray_worker_parents()):
                victim, run_dir = random.Random(len(killed)).choice(parents)
                epoch = (json.loads((Path(run_dir) / "status.json").read_text() or "{}")
                         if (Path(run_dir) / "status.json").exists() else {}).get("epoch")
                had_checkpoint = (Path(run_dir) / "checkpoint.pt").exists()
                try:
                    os.kill(victim, signal.SIGKILL)
                    killed.append({"run": Path(run_dir).name, "epoch": epoch, "checkpoint": had_checkpoint})
                except ProcessLookupError:
                    pass
                next_kill = time.monotonic() + kill_every
    wall = time.monotonic() - started
    table = json.loads((out / "sweep.json").read_text())
    return {"pass": name, "wall_s": round(wall, 1), "exit": proc.returncode, "killed": killed,
            "runs": len(table["rows"]), "problems": table["problems"], "epochs": epoch_counts(out)}


def epoch_counts(out: Path) -> dict:
    counts = {"runs": 0, "lost": 0, "duplicated": 0}
    for run_dir in sorted((out / "runs").iterdir()):
        lines = [json.loads(x)["epoch"] for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
        final = json.loads((run_dir / "final.json").read_text())
        counts["runs"] += 1
        counts["duplicated"] += len(lines) - len(set(lines))
        counts["lost"] += len(set(range(int(final["epochs"]) + 1)) - set(lines))
    return counts


def ray_start_seconds(cpus: int) -> float:
    code = ("import time, ray; t = time.monotonic(); ray.init(num_cpus=%d, include_dashboard=False, "
            "_node_ip_address='127.0.0.1', object_store_memory=100 * 2**20, log_to_driver=False, "
            "configure_logging=False); print(time.monotonic() - t); ray.shutdown()" % cpus)
    return round(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      check=True).stdout.split()[-1]), 1)


def body(out: Path) -> str:
    return (out / "sweep.md").read_text().split("\n\n", 1)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="benchmark folder (one sweep folder per pass)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once in both engines (default 2)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3)")
    parser.add_argument("--hidden", default="16,32", help="the hidden-size axis (default 16,32)")
    parser.add_argument("--max-train", type=int, default=40, help="training pieces per run (default 40)")
    parser.add_argument("--kills", type=int, default=3, help="Ray workers killed in the kill pass (default 3)")
    parser.add_argument("--kill-every", type=float, default=20.0, help="seconds between kills (default 20)")
    parser.add_argument("--passes", default="local,ray,kill", help="which passes, in order (default all three)")
    args = parser.parse_args()
    out = Path(args.out)
    results = {"load_before": os.getloadavg(), "jobs": args.jobs}
    for name in args.passes.split(","):
        argv = grid_argv(out / name, args)
        if name == "local":
            argv += ["--engine", "local", "--jobs", str(args.jobs)]
        else:
            argv += ["--engine", "ray", "--cpus", str(args.jobs)]
        results[name] = run_pass(name, argv, out / name, kills=args.kills if name == "kill" else 0,
                                 kill_every=args.kill_every)
        print(json.dumps(results[name]), file=sys.stderr, flush=True)
    results["ray_start_s"] = ray_start_seconds(args.jobs)
    results["load_after"] = os.getloadavg()
    if "local" in results and "ray" in results:
        results["ray_overhead"] = round(results["ray"]["wall_s"] / results["local"]["wall_s"] - 1, 3)
        results["same_table"] = {name: body(out / name) == body(out / "local")
                                 for name in ("ray", "kill") if name in results}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
