"""A stand-in for lapmusic.training.train.train that runs inside real worker processes (no torch, fast).

The worker imports it through ``LAPMUSIC_WORKER_TRAIN=fake_train:train`` (tests put this folder on
PYTHONPATH). Config keys it understands besides the usual ones:
``gate``: a file path; epoch ``e`` waits until it exists and, when it holds a number, until that number
is at least ``e`` (checking the cancel flag meanwhile);
``fail``: raise this message as a LapMusicError; ``pid_file``: write the worker's pid there at start.
``FAKE_TRAIN_SETUP_SECONDS`` (environment): sleep this long before the first epoch (a run that is training
but has no curve yet, as the real set-up and epoch 0 take).
It writes status.json, metrics.jsonl, checkpoint.pt (after epoch 1 on), final.json like the real one.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from lapmusic.core.errors import LapMusicError
from lapmusic.core.io import atomic_write_json, read_jsonl


def train(config: dict, run_dir, *, progress=None, cancel=None, resume=False):
    run_dir = Path(run_dir)
    epochs = int(config.get("epochs", 2))
    if config.get("pid_file"):
        atomic_write_json(config["pid_file"], {"pid": os.getpid(), "resume": resume})
    status = {"state": "running", "epoch": 0, "epochs": epochs, "fraction": 0.0, "message": "fake", "error": None}
    atomic_write_json(run_dir / "status.json", {**status, "updated": time.time()})
    if config.get("fail"):
        raise LapMusicError(str(config["fail"]))
    done = max((int(r["epoch"]) for r in read_jsonl(run_dir / "metrics.jsonl")), default=0) if resume else 0
    if resume and not (run_dir / "checkpoint.pt").is_file():
        raise LapMusicError("no checkpoint to resume from")
    gate = Path(config["gate"]) if config.get("gate") else None
    time.sleep(float(os.environ.get("FAKE_TRAIN_SETUP_SECONDS", "0")))
    for epoch in range(done + 1, epochs + 1):
        while gate is not None and not _open(gate, epoch):
            if cancel.is_set():
                break
            time.sleep(0.02)
        if cancel.is_set():
            atomic_write_json(run_dir / "status.json", {**status, "state": "cancelled", "epoch": epoch - 1,
                                                        "updated": time.time()})
            return {"state": "cancelled", "epoch": epoch - 1}
        with open(run_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps({"epoch": epoch, "train_nll": 10.0 / epoch, "seconds": 1.5}) + "\n")
        (run_dir / "checkpoint.pt").write_bytes(f"epoch {epoch}".encode())
        atomic_write_json(run_dir / "status.json", {**status, "epoch": epoch, "fraction": epoch / epochs,
                                                    "updated": time.time()})
    atomic_write_json(run_dir / "status.json", {**status, "state": "finished", "epoch": epochs, "fraction": 1.0,
                                                "updated": time.time()})
    atomic_write_json(run_dir / "final.json", {"nll": 7.5, "epochs": epochs})
    (run_dir / "best.pt").write_bytes(b"model")
    return {"state": "finished", "nll": 7.5}


def _open(gate: Path, epoch: int) -> bool:
    try:
        text = gate.read_text().strip()
    except OSError:
        return False
    return not text or (text.isdigit() and int(text) >= epoch)


def full_disk_train(config: dict, run_dir, **kwargs):
    """The real training on a disk that is full when torch saves (what torch.save does on ENOSPC)."""
    import errno

    import torch

    from lapmusic.training.config import TrainConfig
    from lapmusic.training.train import train as real_train

    def no_space(obj, handle):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0") from None

    torch.save = no_space
    return real_train(TrainConfig.from_dict(config), run_dir, **kwargs)
