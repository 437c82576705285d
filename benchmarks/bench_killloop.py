"""kill -9 at random moments during training and resume, many times: are run folders crash-consistent?

Each cycle starts a real training process on a tiny synthetic dataset (``--resume`` when the folder has a
checkpoint, a fresh start otherwise: a run killed during pre-training has nothing to resume), waits a
random time and sends SIGKILL. ``LAPMUSIC_TEST_WRITE_PAUSE`` makes every atomic write sleep at a random
byte offset, so many kills land inside a write. When a run finishes, it is checked and a new one starts.

Counted (all must be 0):
- ``lost``: an epoch up to the checkpoint's with no metrics line (after a kill, and in finished runs);
- ``duplicated``: an epoch with two metrics lines;
- ``misaligned``: a finished run's validation NLL at epoch e differs from an uninterrupted reference run's
  at epoch e (training is deterministic on one CPU thread, so a resumed run must match it exactly);
- ``stray``: files left in a finished run folder that are not run files (``.*.tmp`` of killed writers);
- ``unclear``: a process that ended with an error or a traceback instead of finishing or being killed.

Processes are forked from a ``forkserver`` that has imported torch once, so a cycle costs milliseconds,
not the seconds of a Python start. Usage::

    python benchmarks/bench_killloop.py --kills 100          # prints the counts as JSON
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

CONFIG = dict(dataset="synthetic", hidden=12, init="lae", epochs=12, lr=1e-2, batch_size=6, bptt=8, seed=3,
              device="cpu", patience=None, readout_steps=0, eval_batch_size=16)
RUN_FILES = {"config.json", "status.json", "data.json", "metrics.jsonl", "lae.npz", "checkpoint.pt", "best.pt", "final.json",
             ".lock"}


def synthetic_dataset():
    """24/6/6 random ``(T, 88)`` rolls of held notes (the same every call)."""
    from types import SimpleNamespace

    import numpy as np

    def rolls(n, seed):
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(n):
            t = int(rng.integers(10, 41))
            roll = np.zeros((t, 88), dtype=np.uint8)
            for key in rng.choice(88, size=12, replace=False):
                frame = 0
                while frame < t:
                    run = int(rng.integers(1, 5))
                    if rng.random() < 0.6:
                        roll[frame:frame + run, key] = 1
                    frame += run + int(rng.integers(1, 4))
            out.append(roll)
        return out

    return SimpleNamespace(key="synthetic", train=rolls(24, 0), valid=rolls(6, 1), test=rolls(6, 2))


def _worker(run_dir: str, config: dict, pause: float, ready, outcome: str) -> None:
    """One training process: resume when there is a checkpoint, else start (again)."""
    import torch

    from lapmusic.core.errors import LapMusicError
    from lapmusic.training.config import TrainConfig
    from lapmusic.training.train import train

    torch.set_num_threads(1)
    os.environ["LAPMUSIC_TEST_WRITE_PAUSE"] = str(pause)
    dataset = synthetic_dataset()
    resume = (Path(run_dir) / "checkpoint.pt").exists()
    ready.set()
    try:
        train(None if resume else TrainConfig.from_settings(config), run_dir, resume=resume, dataset=dataset)
    except LapMusicError as exc:
        Path(outcome).write_text(f"error: {exc}")
        os._exit(2)
    except BaseException as exc:  # noqa: BLE001 - counted as unclear
        Path(outcome).write_text(f"traceback: {type(exc).__name__}: {exc}")
        os._exit(3)
    os._exit(0)


def metrics_epochs(run_dir: Path) -> list[int]:
    """The epoch of every line of metrics.jsonl as written (raw: duplicates and gaps stay visible)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines() if line.strip()]


def checkpoint_epoch(run_dir: Path) -> int | None:
    import torch

    path = run_dir / "checkpoint.pt"
    if not path.exists():
        return None
    return int(torch.load(path, weights_only=True)["epoch"])


def _check_after_kill(run_dir: Path, counts: dict) -> None:
    epochs = metrics_epochs(run_dir)
    ckpt = checkpoint_epoch(run_dir)
    counts["duplicated"] += len(epochs) - len(set(epochs))
    if ckpt is not None:
        counts["lost"] += len(set(range(ckpt + 1)) - set(epochs))
        counts["line_ahead_of_checkpoint"] += int(max(epochs, default=-1) > ckpt)
    else:
        counts["killed_before_first_checkpoint"] += 1
    counts["temp_files_after_kill"] += sum(1 for p in run_dir.iterdir() if p.name.endswith(".tmp"))


def _check_finished(run_dir: Path, reference: list[float], counts: dict) -> None:
    from lapmusic.training.rundir import read_history

    epochs = metrics_epochs(run_dir)
    counts["duplicated"] += len(epochs) - len(set(epochs))
    counts["lost"] += len(set(range(CONFIG["epochs"] + 1)) - set(epochs))
    valid = [row["valid_nll"] for row in read_history(run_dir)]
    counts["misaligned"] += sum(1 for a, b in zip(valid, reference) if abs(a - b) > 1e-9 * (1 + abs(b)))
    counts["misaligned"] += abs(len(valid) - len(reference))
    counts["stray"] += sum(1 for p in run_dir.iterdir() if p.name not in RUN_FILES)
    final = json.loads((run_dir / "final.json").read_text())
    counts["misaligned"] += int(final["epochs"] != CONFIG["epochs"])


def kill_loop(root, kills: int, *, seed: int = 0, pause: float = 0.03, window: float = 1.5,
              config: dict | None = None) -> dict:
    """``kills`` SIGKILLs at random moments of training runs under ``root``; returns the counts."""
    global CONFIG
    if config is not None:
        CONFIG = dict(CONFIG, **config)
    root = Path(root)
    rng = random.Random(seed)
    context = multiprocessing.get_context("forkserver")
    # torch._dynamo: creating the first optimizer imports it (seconds); scipy.linalg: the LAE solver
    context.set_forkserver_preload(["torch", "torch._dynamo", "scipy.linalg", "lapmusic.training.train", "lapmusic.lae.fit"])
    counts = {"kills": 0, "runs_finished": 0, "lost": 0, "duplicated": 0, "misaligned": 0, "stray": 0,
              "unclear": 0, "killed_before_first_checkpoint": 0, "line_ahead_of_checkpoint": 0,
              "temp_files_after_kill": 0}
    errors: list[str] = []

    def run(run_dir: Path, kill_after: float | None) -> str:
        ready = context.Event()
        outcome = root / "outcome.txt"
        outcome.unlink(missing_ok=True)
        process = context.Process(target=_worker, args=(str(run_dir), CONFIG, pause, ready, str(outcome)))
        process.start()
        if kill_after is not None:
            ready.wait(60)
            process.join(kill_after)
            if process.exitcode is None:
                os.kill(process.pid, signal.SIGKILL)
                process.join()
                return "killed"
        process.join()
        if process.exitcode != 0:
            errors.append(outcome.read_text() if outcome.exists() else f"exit code {process.exitcode}")
            return "unclear"
        return "finished"

    reference_dir = root / "reference"
    if run(reference_dir, None) != "finished":
        raise RuntimeError(f"the reference run failed: {errors}")
    from lapmusic.training.rundir import read_history

    reference = [row["valid_nll"] for row in read_history(reference_dir)]
    number = 0
    run_dir = root / f"run{number}"
    while counts["kills"] < kills:
        result = run(run_dir, rng.uniform(0.0, window))
        if result == "killed":
            counts["kills"] += 1
            _check_after_kill(run_dir, counts)
            continue
        if result == "unclear":
            counts["unclear"] += 1
        else:
            counts["runs_finished"] += 1
            _check_finished(run_dir, reference, counts)
        number += 1
        run_dir = root / f"run{number}"
    if run_dir.exists():  # finish the last one, uninterrupted
        if run(run_dir, None) == "finished":
            counts["runs_finished"] += 1
            _check_finished(run_dir, reference, counts)
        else:
            counts["unclear"] += 1
    counts["errors"] = errors[:5]
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pause", type=float, default=0.03, help="max seconds a write sleeps (default 0.03)")
    parser.add_argument("--window", type=float, default=1.5, help="kill within this many seconds of the start")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lapmusic-killloop-") as root:
        counts = kill_loop(root, args.kills, seed=args.seed, pause=args.pause, window=args.window)
    counts["seconds"] = round(time.perf_counter() - started, 1)
    counts["load"] = os.getloadavg()[0]
    print(json.dumps(counts, indent=2))
    bad = sum(counts[k] for k in ("lost", "duplicated", "misaligned", "stray", "unclear"))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
