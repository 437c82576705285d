"""The files of a run folder: status, metrics history, checkpoints; written crash-consistently, read defensively.

Write order of one epoch ``e`` (see ``docs/reference.md``, "Run folders"):

1. ``metrics.jsonl`` with the line of epoch ``e`` (atomic and fsync'd: durable before step 2);
2. ``checkpoint.pt`` claiming epoch ``e``;
3. ``best.pt`` when epoch ``e`` is the best so far.

A crash between 1 and 2 leaves a metrics line past the checkpoint: :func:`reconcile` drops it on resume and
the epoch is trained again. A crash between 2 and 3 leaves ``best.pt`` older than the checkpoint's
``best_epoch == epoch``: :func:`reconcile` writes it from the checkpoint's model. A checkpoint whose metrics
line is missing cannot happen (step 1 is durable first); a folder where it did (edited by hand) is refused.

Readers (:func:`read_status`, :func:`inspect_history`) never raise on a bad file: bad lines are skipped and
reported, so one damaged folder cannot break a page listing many.
"""

from __future__ import annotations

import json
import pickle
import re
import time
from pathlib import Path

from lapmusic.core.errors import CheckpointError
from lapmusic.core.io import atomic_save, atomic_write_json, atomic_write_text, read_json
from lapmusic.model.config import is_int, is_number

CHECKPOINT_FORMAT = "lapmusic-run-checkpoint"
CHECKPOINT_VERSION = 1
STATUS_MIN_INTERVAL = 1.0  # seconds between two progress updates of status.json

# keys of a metrics line that must be numbers (or null) when present
_NUMERIC = ("valid_nll", "train_nll", "valid_acc", "valid_expected_acc", "seconds", "elapsed", "lr")
# what a resume needs from checkpoint.pt, with the type each must have
# (torch is imported inside the functions that need it: the app lists run folders without loading torch)
_RESUME_KEYS = {"epoch": int, "model": dict, "optimizer": dict, "scheduler": dict, "torch_rng": "tensor",
                "best_valid_nll": float, "best_epoch": int, "epochs_since_best": int, "train_seconds": float}


# ------------------------------------------------------------------------------------------ status
class StatusWriter:
    """Writes ``status.json`` atomically; progress-only updates at most once per ``STATUS_MIN_INTERVAL``."""

    def __init__(self, run_dir: Path, epochs: int):
        self.path = Path(run_dir) / "status.json"
        self.epochs = epochs
        self._last = 0.0
        self.data = {"state": "queued", "epoch": 0, "epochs": epochs, "fraction": 0.0, "message": "",
                     "error": None}

    def update(self, force: bool = False, **fields) -> None:
        self.data.update(fields)
        now = time.monotonic()
        if force or now - self._last >= STATUS_MIN_INTERVAL:
            self._last = now
            self.data["updated"] = time.time()
            atomic_write_json(self.path, self.data)

    def try_update(self, **fields) -> None:
        """A forced update that never raises (the failure being reported may be a full disk)."""
        try:
            self.update(force=True, **fields)
        except Exception:  # noqa: BLE001 - best effort: the caller is already raising the real error
            pass


def read_status(run_dir) -> dict:
    """``status.json`` of a run folder (``{"state": "missing"}`` when there is none yet, ``"unknown"`` with
    an ``error`` when it is unreadable or malformed); never raises."""
    path = Path(run_dir) / "status.json"
    if not path.exists():
        return {"state": "missing", "error": None, "epoch": 0}
    data = read_json(path)
    if data is None:
        return {"state": "unknown", "error": f"unreadable status.json in {run_dir}", "epoch": 0}
    if not isinstance(data.get("state"), str) or not is_int(data.get("epoch", 0)):
        return {"state": "unknown", "error": f"malformed status.json in {run_dir}", "epoch": 0}
    return data


# ------------------------------------------------------------------------------------------ metrics
def _line_problem(row: dict) -> str | None:
    epoch = row.get("epoch")
    if not is_int(epoch) or epoch < 0:
        return f"epoch {epoch!r} is not a non-negative integer"
    for key in _NUMERIC:
        if row.get(key) is not None and not is_number(row[key]):
            return f"epoch {epoch}: {key} {row[key]!r} is not a number"
    return None


def inspect_history(run_dir) -> tuple[list[dict], list[str]]:
    """The well-formed epoch lines of ``metrics.jsonl`` sorted by epoch (one per epoch, the last written
    wins), and the problems found: unparsable or malformed lines, duplicated or missing epochs."""
    path = Path(run_dir) / "metrics.jsonl"
    problems: list[str] = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [], []
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"metrics.jsonl is unreadable ({exc})"]
    by_epoch: dict[int, dict] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            problems.append(f"metrics.jsonl line {number} is not JSON")
            continue
        if not isinstance(row, dict):
            problems.append(f"metrics.jsonl line {number} is not a JSON object")
            continue
        problem = _line_problem(row)
        if problem:
            problems.append(f"metrics.jsonl line {number}: {problem}")
            continue
        if row["epoch"] in by_epoch:
            problems.append(f"metrics.jsonl has epoch {row['epoch']} twice")
        by_epoch[row["epoch"]] = row
    rows = [by_epoch[e] for e in sorted(by_epoch)]
    missing = sorted(set(range(rows[-1]["epoch"] + 1)) - set(by_epoch)) if rows else []
    if missing:
        problems.append(f"metrics.jsonl misses epochs {missing}")
    return rows, problems


def read_history(run_dir) -> list[dict]:
    """The well-formed epoch lines of ``metrics.jsonl``, sorted, one per epoch (``[]`` when none); never
    raises. Use :func:`inspect_history` to also learn what was skipped."""
    return inspect_history(run_dir)[0]


def write_history(run_dir: Path, history: list[dict]) -> None:
    """Replace ``metrics.jsonl`` atomically and durably (file and folder fsync'd before returning)."""
    atomic_write_text(Path(run_dir) / "metrics.jsonl",
                      "".join(json.dumps(h, sort_keys=True) + "\n" for h in history))


# ------------------------------------------------------------------------------------------ checkpoints
def save_checkpoint(path: Path, payload: dict) -> None:
    import torch

    atomic_save(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: Path, map_location) -> dict:
    """A lapmusic checkpoint (``weights_only=True``: tensors and plain containers only, never code)."""
    import torch

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist: the run has no saved model yet (did it finish an epoch?)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message spans lines and suggests weights_only=False (unsafe): say it in one line, our way.
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            raise CheckpointError(
                f"{path} was refused: it asks to load the Python object {found.group(1)}, which could run code, "
                "so it is not a lapmusic checkpoint; train again or use a checkpoint lapmusic wrote") from None
        raise CheckpointError(f"{path} is corrupt or not a lapmusic checkpoint (unreadable pickle data); "
                              "train again or resume an intact run") from None
    except Exception as exc:  # noqa: BLE001 - corrupt or truncated: torch raises many types
        raise CheckpointError(f"{path} is corrupt or not a checkpoint ({type(exc).__name__}: {_first_line(exc)}); "
                              "train again or resume an intact run") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a lapmusic checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {payload.get('version')}; this lapmusic reads version "
            f"{CHECKPOINT_VERSION}: retrain with this version"
        )
    return payload


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return text if len(text) <= limit else text[:limit] + "..."


def check_resume_payload(payload: dict, path: Path) -> None:
    """Raise :class:`CheckpointError` naming what is missing or mistyped in a checkpoint to resume from."""
    import torch

    problems = []
    for key, kind in _RESUME_KEYS.items():
        value = payload.get(key)
        ok = (is_number(value) if kind is float else is_int(value) if kind is int
              else isinstance(value, torch.Tensor) if kind == "tensor" else isinstance(value, kind))
        if not ok:
            problems.append(f"{key} is {'missing' if key not in payload else type(value).__name__}")
    rng = payload.get("torch_rng")
    if isinstance(rng, torch.Tensor) and (rng.dtype != torch.uint8 or rng.dim() != 1
                                          or rng.numel() != torch.get_rng_state().numel()):
        problems.append(f"torch_rng is not a random-generator state ({rng.dtype}, shape {tuple(rng.shape)})")
    if problems:
        raise CheckpointError(f"{path} cannot be resumed from: {'; '.join(problems)}. The checkpoint is damaged "
                              "or not from lapmusic: start the run again in a new folder")


def no_checkpoint_message(run_dir: Path, config: dict) -> str:
    """What to do when a run to resume has no checkpoint (it was stopped before its first epoch was saved)."""
    options = " ".join(f"--{key.replace('_', '-')} {config[key]}" for key in ("dataset", "hidden", "init", "epochs",
                                                                              "seed") if key in config)
    return (f"{run_dir} has no checkpoint: the run was stopped during pre-training, before its first epoch was "
            f"saved, so there is nothing to resume. Start it again: `lapmusic train {options} --out {run_dir}` "
            "(with the same other options; the folder is reused), or start it again from the app")


def reconcile(run_dir: Path, payload: dict, map_location) -> list[dict]:
    """Bring the folder back to the state the checkpoint claims; returns the history up to its epoch.

    - metrics lines past the checkpoint's epoch (the crash came between steps 1 and 2) are dropped and
      ``metrics.jsonl`` rewritten; malformed lines are dropped too;
    - a missing epoch line up to the checkpoint is refused (it cannot happen by construction);
    - when the checkpoint's epoch is its best epoch and ``best.pt`` is older (crash between steps 2 and 3),
      ``best.pt`` is written from the checkpoint's model;
    - a ``best.pt`` that is missing, damaged or of another epoch than the checkpoint's ``best_epoch`` is
      refused now (only a hand edit does that), not after training the remaining epochs.
    """
    run_dir = Path(run_dir)
    epoch = payload["epoch"]
    rows, problems = inspect_history(run_dir)
    kept = [row for row in rows if row["epoch"] <= epoch]
    missing = sorted(set(range(epoch + 1)) - {row["epoch"] for row in kept})
    if missing:
        detail = f" ({'; '.join(problems)})" if problems else ""
        raise CheckpointError(
            f"{run_dir}/metrics.jsonl misses the lines of epochs {missing} that checkpoint.pt (epoch {epoch}) "
            f"claims{detail}: the folder was edited or damaged; start the run again in a new folder")
    if kept != rows or problems:
        write_history(run_dir, kept)
    best_path = run_dir / "best.pt"
    best, problem = None, "missing"
    if best_path.exists():
        try:
            best = load_checkpoint(best_path, map_location)
        except CheckpointError as exc:
            problem = str(exc)
    if payload["best_epoch"] == epoch:
        if best is None or best.get("epoch") != epoch:
            save_checkpoint(best_path, {
                "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "epoch": epoch,
                "valid_nll": payload["best_valid_nll"], "model": payload["model"], "config": payload.get("config"),
            })
    elif best is None or best.get("epoch") != payload["best_epoch"]:
        # best.pt is written right after the checkpoint of its epoch and then left alone: only a hand edit
        # or a damaged disk gets here. Say so now, not after training all the remaining epochs.
        found = problem if best is None else f"it holds epoch {best.get('epoch')!r}"
        raise CheckpointError(
            f"{best_path} should hold the best model (epoch {payload['best_epoch']}) but {found}; "
            "the best model is lost: start the run again in a new folder")
    return kept


def read_config_dict(run_dir) -> tuple[dict | None, str | None]:
    """``(config.json as a dict, None)``, ``(None, None)`` when there is no config.json, or
    ``({}, problem)`` when it is unreadable or has bad types for the keys the pages show. Never raises."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        return None, None
    data = read_json(path)
    if data is None:
        return {}, "config.json is unreadable or not a JSON object"
    for key in ("dataset", "init"):
        if key in data and not isinstance(data[key], str):
            return data, f"config.json: {key} is {data[key]!r}, not a string"
    for key in ("hidden", "epochs", "seed"):
        if key in data and not is_int(data[key]):
            return data, f"config.json: {key} is {data[key]!r}, not an integer"
    missing = [key for key in ("dataset", "hidden", "init", "epochs") if key not in data]
    if missing:
        return data, f"config.json misses {missing}"
    return data, None
