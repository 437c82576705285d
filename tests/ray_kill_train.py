"""The real training, killed once by kill -9 of its parent (the Ray worker running its task) right after its
first checkpoint: what a crashed node or an OOM-killed Ray worker does mid-run. Used by tests/test_ray.py
through ``LAPMUSIC_WORKER_TRAIN=ray_kill_train:train``; ``SWEEP/killed-RUN`` keeps "once" across attempts."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path


def train(config: dict, run_dir, **kwargs):
    from lapmusic.training.config import TrainConfig
    from lapmusic.training.train import train as real_train

    run_dir = Path(run_dir)
    marker = run_dir.parent.parent / f"killed-{run_dir.name}"  # in the sweep folder: SWEEP/runs/RUN
    if not marker.exists():
        def kill_parent_after_first_checkpoint():
            while not (run_dir / "checkpoint.pt").exists():
                time.sleep(0.05)
            marker.write_text(str(os.getppid()))
            os.kill(os.getppid(), signal.SIGKILL)  # the Ray worker; we die with it (PR_SET_PDEATHSIG)

        threading.Thread(target=kill_parent_after_first_checkpoint, daemon=True).start()
    return real_train(TrainConfig.from_dict(config), run_dir, **kwargs)
