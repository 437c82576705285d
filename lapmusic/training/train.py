"""The training engine: pre-training, mini-batches with truncated BPTT, checkpoints, resume, cancel.

A run lives in a folder (layout in ``docs/reference.md``)::

    RUNDIR/config.json    the TrainConfig (flat)
    RUNDIR/status.json    {"state", "epoch", "epochs", "fraction", "message", "error", "updated"}
    RUNDIR/data.json      the fingerprint of the data it trains on (resume and evaluate check it)
    RUNDIR/metrics.jsonl  one JSON line per epoch (epoch 0 = the network right after initialisation)
    RUNDIR/lae.npz        the LAE (init == "lae")
    RUNDIR/checkpoint.pt  last good state: model, optimizer, scheduler, epoch, config, RNG
    RUNDIR/best.pt        the model with the lowest validation NLL so far
    RUNDIR/final.json     test metrics of the best model, epochs, seconds, device, peak memory, ...

Every file is replaced atomically, so a reader (the app polls ``status.json`` and ``metrics.jsonl``) never
sees half a file, and a crash or a cancel leaves the last good checkpoint in place. One epoch
(:func:`lapmusic.training.epoch.train_epoch`) and the evaluation passes live in ``epoch.py``, the
initialisation in ``pretrain.py``, the run folder's files in ``rundir.py``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lapmusic.core.device import engine_threads, resolve_device, threads_kept
from lapmusic.core.errors import CheckpointError, LapMusicError
from lapmusic.core.io import atomic_write_json, storage_cause, storage_error
from lapmusic.core.lock import run_lock
from lapmusic.core.progress import Progress
from lapmusic.core.usage import process_usage
from lapmusic.model.metrics import baselines
from lapmusic.model.rnn import PianoRollRNN
from lapmusic.training.build import (
    check_run_data,
    load_model_state,
    read_run_data,
    record_run_data,
    resumed_config,
    run_dataset,
    run_splits,
    vocabulary_note,
)
from lapmusic.training.config import TrainConfig
from lapmusic.training.epoch import (
    TrainingCancelled,
    TrainingDiverged,
    _to_tensors,
    check_divergence,
    choose_threshold,
    evaluate_nll,
    evaluate_tensors,
    key_density,
    noise_generator,
    train_epoch,
)
from lapmusic.training.optim import current_lr, make_optimizer, make_scheduler
from lapmusic.training.pretrain import initialise
from lapmusic.training.rundir import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    StatusWriter,
    check_resume_payload,
    load_checkpoint,
    reconcile,
    save_checkpoint,
    write_history,
)
from lapmusic.training.stopping import Terminated, first_missing, remove_failed_start, sigterm_as_interrupt

EPOCH_ACC_SAMPLES = 2  # NADE: sampled frames per frame for the per-epoch validation expected ACC (test: 10)


# ------------------------------------------------------------------------------------------ train
def train(
    config: TrainConfig | None,
    run_dir,
    *,
    progress: Progress | None = None,
    cancel=None,
    resume: bool = False,
    dataset=None,
) -> dict:
    """Train a network as ``config`` says and keep everything in ``run_dir``.

    Parameters
    ----------
    config : TrainConfig or None
        The run's settings. With ``resume`` it may be ``None`` (read from the folder) or differ only in
        ``epochs``, ``patience`` and ``max_seconds`` (to train longer).
    run_dir : str or Path
        The run folder (created when missing; it must not hold a run unless ``resume``).
    progress : callable, optional
        ``progress(fraction, message)``, called often (every batch); ``status.json`` is updated at most
        once a second with the same information.
    cancel : object, optional
        Anything with ``is_set()``, checked every batch. A cancelled run keeps its last checkpoint (end of
        the last finished epoch) and gets state ``cancelled``; ``resume=True`` continues it.
    resume : bool
        Continue from ``checkpoint.pt`` (the same random stream as an uninterrupted run).
    dataset : object, optional
        ``.train``, ``.valid``, ``.test`` lists of ``(T, 88)`` arrays; by default
        ``lapmusic.data.registry.load_dataset(config.dataset)``.

    Returns
    -------
    dict
        ``final.json``'s content: test ``nll``, ``acc``, ``expected_acc``, ``acc_tuned`` at the validation
        ``threshold``, ``baselines``, ``best_epoch``, ``stopped``, timings, ...; for a cancelled run
        ``{"state": "cancelled", "epoch", "run_dir"}`` (no ``final.json``).

    Raises
    ------
    TrainingDiverged
        A NaN/inf or absurd loss (the folder keeps its last good checkpoint).
    LapMusicError
        Bad settings, a full disk or a folder it cannot write (``status.json`` then says ``failed`` with the
        message, when it can still be written); :class:`CheckpointError` for a run folder it cannot resume;
        :class:`lapmusic.core.lock.RunFolderBusy` before anything is written when another process holds the
        folder's writer lock.
    """
    run_dir = Path(run_dir)
    if resume and not run_dir.is_dir():
        raise CheckpointError(f"run folder {run_dir} does not exist: nothing to resume")
    if not resume:
        if config is None:
            raise LapMusicError("a TrainConfig is needed to start a new run")
        config.validate()  # before the lock: bad settings create no folder
    created = None if resume else first_missing(run_dir)
    with sigterm_as_interrupt(), run_lock(run_dir), threads_kept():  # the run's thread cap ends with it
        try:
            return _train_locked(config, run_dir, progress, cancel, resume, dataset)
        except Exception:  # not after Ctrl-C or SIGTERM: like a cancel, the folder stays and its status says so
            remove_failed_start(run_dir, created)  # only a folder this call created, without a checkpoint
            raise


def _train_locked(config: TrainConfig | None, run_dir: Path, progress, cancel, resume: bool, dataset) -> dict:
    if resume:
        config = resumed_config(config, run_dir)
        dataset = run_dataset(config, dataset)
        check_run_data(run_dir, dataset, purpose="resume")  # before status.json changes: a refusal leaves it as it was
    elif (run_dir / "checkpoint.pt").exists():
        raise LapMusicError(f"{run_dir} already holds a run: resume it or choose another folder")
    atomic_write_json(run_dir / "config.json", config.to_dict())
    status = StatusWriter(run_dir, config.epochs)
    status.update(force=True, state="running", message="starting", error=None)

    def report(fraction: float, message: str, **fields) -> None:
        fraction = max(0.0, min(1.0, fraction))
        status.update(fraction=fraction, message=message, **fields)
        if progress is not None:
            progress(fraction, message)

    try:
        return _train(config, run_dir, status, report, cancel, resume, dataset)
    except TrainingCancelled:
        status.try_update(state="cancelled", message="cancelled: the last checkpoint is kept")
        if progress is not None:
            progress(status.data.get("fraction", 0.0), "cancelled")
        return {"state": "cancelled", "epoch": status.data.get("epoch", 0), "run_dir": str(run_dir)}
    except KeyboardInterrupt as stop:
        # Ctrl-C in the terminal, or SIGTERM: like a cancel, the last checkpoint stays and --resume continues.
        how = "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"
        status.try_update(state="cancelled", message=f"{how}: the last checkpoint is kept")
        raise
    except BaseException as caught:
        exc = caught
        if not isinstance(exc, LapMusicError) and storage_cause(exc) is not None:
            exc = storage_error(run_dir, exc)  # e.g. torch.save's RuntimeError around ENOSPC
        message = str(exc) if isinstance(exc, LapMusicError) else f"{type(exc).__name__}: {exc}"
        status.try_update(state="failed", error=message, message="failed")
        if exc is not caught:
            raise exc from caught
        raise


@dataclass
class _Run:
    """What the epoch loop carries from one epoch to the next (and what a checkpoint saves)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    history: list[dict]  # the metrics lines so far
    pretrain: dict
    epoch: int  # the last finished epoch
    best_nll: float
    best_epoch: int
    since_best: int  # epochs since the best
    train_seconds: float  # summed over resumes: the time budget is the run's, not the process's


def _train(config: TrainConfig, run_dir: Path, status: StatusWriter, report, cancel, resume: bool,
           dataset) -> dict:
    started = time.perf_counter()
    device = resolve_device(config.device)
    engine_threads(device, config.model.hidden, config.batch_size)  # small products: a 2nd thread only slows
    torch.manual_seed(config.seed)
    if dataset is None:
        report(0.0, f"loading dataset {config.dataset}")
        dataset = run_dataset(config, dataset)
    if not resume or read_run_data(run_dir) is None:  # a run from before data.json: its data from now on
        record_run_data(run_dir, config.dataset, dataset)
    train_seqs, valid_seqs, test_seqs = _checked_splits(config, dataset)
    train_t, valid_t = _to_tensors(train_seqs, device), _to_tensors(valid_seqs, device)
    density = key_density(train_t) if config.input_noise > 0 else None
    slots = config.epochs + 1  # progress slot 0: pre-training and the evaluation of the initial network
    model = PianoRollRNN.from_config(config.model)
    model.head.prepare(train_seqs)  # e.g. the chord vocabulary (a checkpoint to resume holds the same)
    if resume:
        run = _resume(model, config, run_dir, device, report, slots)
    else:
        run = _start(model, config, run_dir, device, train_seqs, train_t, valid_t, report, cancel, started)

    stopped = "epochs"
    for epoch in range(run.epoch + 1, config.epochs + 1):
        if config.patience is not None and run.since_best >= config.patience:
            stopped = "early stopping"
            break
        if config.max_seconds is not None and run.train_seconds >= config.max_seconds:
            stopped = "time budget"
            break
        epoch_started = time.perf_counter()
        rng = np.random.default_rng([config.seed, epoch])  # batch order and noise seeded by epoch: resumable
        noise = noise_generator(config.input_noise, config.seed, epoch, device)

        def on_batch(done: int, total: int, epoch=epoch) -> None:
            report((epoch + done / total) / slots, f"epoch {epoch}/{config.epochs}: batch {done}/{total}",
                   epoch=epoch - 1)

        model.recurrent.requires_grad_(epoch > config.freeze_recurrent_epochs)  # frozen: no grad, Adam skips it
        result = train_epoch(model, run.optimizer, train_t, batch_size=config.batch_size, bptt=config.bptt,
                             clip=config.clip, rng=rng, on_batch=on_batch, cancel=cancel,
                             warmup_steps=config.warmup_steps, input_noise=config.input_noise, density=density,
                             noise_generator=noise)
        valid = evaluate_tensors(model, valid_t, config.eval_batch_size, acc_samples=EPOCH_ACC_SAMPLES)
        check_divergence(epoch, result["nll"], valid["nll"])
        seconds = time.perf_counter() - epoch_started
        line = _epoch_line(epoch, result["nll"], valid, seconds, run.history[-1].get("elapsed", 0.0) + seconds,
                           run.optimizer)  # the rate this epoch trained with, before the scheduler's step
        run.scheduler.step(valid["nll"])
        improved = _record(run, line, seconds)
        _save_epoch(run_dir, model, config, run, improved)
        report((epoch + 1) / slots, f"epoch {epoch}: train NLL {result['nll']:.3f}, valid NLL {valid['nll']:.3f}",
               epoch=epoch)

    report(0.99, "evaluating the best model on the test split")
    final = _final_evaluation(model, config, run_dir, device, run, valid_t, train_seqs, test_seqs, stopped, started)
    final["data"] = read_run_data(run_dir)  # what it was trained and tested on
    final["notes"] = [n for n in [vocabulary_note(config, train_seqs)] if n]  # settings the data could not honour
    atomic_write_json(run_dir / "final.json", final)
    status.update(force=True, state="finished", fraction=1.0, epoch=final["epochs"],
                  message=f"finished: test NLL {final['nll']:.3f}" if final["nll"] is not None else "finished")
    return final


# ------------------------------------------------------------------------------------------ the loop's helpers
def _checked_splits(config: TrainConfig, dataset):
    """The run's train, valid and test pieces; a run needs a piece of two frames in train and valid."""
    train_seqs, valid_seqs, test_seqs = run_splits(config, dataset)
    if not any(len(s) >= 2 for s in train_seqs):
        raise LapMusicError(f"dataset {config.dataset!r} has no training piece of two or more frames")
    if not any(len(s) >= 2 for s in valid_seqs):
        raise LapMusicError(f"dataset {config.dataset!r} has no validation piece of two or more frames")
    return train_seqs, valid_seqs, test_seqs


def _start(model: PianoRollRNN, config: TrainConfig, run_dir: Path, device, train_seqs, train_t, valid_t,
           report, cancel, started: float) -> _Run:
    """Pre-train (:func:`lapmusic.training.pretrain.initialise`), evaluate the initial network as epoch 0 and
    save it as the first checkpoint."""
    slots = config.epochs + 1
    pretrain = initialise(model, config, train_seqs, run_dir, device, lambda f, m: report(0.9 * f / slots, m), cancel)
    if cancel is not None and cancel.is_set():
        raise TrainingCancelled("cancelled")
    model.to(device)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config)
    report(0.9 / slots, "evaluating the initial network")
    initial_train = evaluate_nll(model, train_t, config.eval_batch_size)  # its NLL is all the epoch line keeps
    initial_valid = evaluate_tensors(model, valid_t, config.eval_batch_size, acc_samples=EPOCH_ACC_SAMPLES)
    if initial_valid["nll"] is None or not math.isfinite(initial_valid["nll"]):
        raise TrainingDiverged("the initial network gives a NaN/inf validation NLL; try a smaller --alpha")
    line = _epoch_line(0, initial_train["nll"], initial_valid, 0.0, time.perf_counter() - started, optimizer)
    run = _Run(optimizer, scheduler, history=[line], pretrain=pretrain, epoch=0, best_nll=initial_valid["nll"],
               best_epoch=0, since_best=0, train_seconds=0.0)
    _save_epoch(run_dir, model, config, run, improved=True)
    report(1 / slots, f"epoch 0: valid NLL {initial_valid['nll']:.3f}", epoch=0)
    return run


def _resume(model: PianoRollRNN, config: TrainConfig, run_dir: Path, device, report, slots: int) -> _Run:
    """Load ``checkpoint.pt``: weights, optimizer, scheduler, random state; bring the folder back to its epoch."""
    path = run_dir / "checkpoint.pt"
    payload = load_checkpoint(path, device)
    saved_config = payload.get("config")
    if not isinstance(saved_config, dict) or saved_config.get("hidden") != config.model.hidden:
        raise CheckpointError(f"{path} does not belong to this run's config.json")
    check_resume_payload(payload, path)
    load_model_state(model, payload["model"], path)
    model.to(device)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config)
    try:
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        torch.set_rng_state(payload["torch_rng"].cpu())
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} holds an optimizer or random state this run cannot use "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                              "start the run again in a new folder") from exc
    run = _Run(optimizer, scheduler, history=[], pretrain=dict(payload.get("pretrain") or {}),
               epoch=payload["epoch"], best_nll=float(payload["best_valid_nll"]), best_epoch=payload["best_epoch"],
               since_best=payload["epochs_since_best"], train_seconds=float(payload["train_seconds"]))
    run.history = reconcile(run_dir, payload, device)  # drops metrics lines past the checkpoint, fixes best.pt
    report((run.epoch + 1) / slots, f"resumed after epoch {run.epoch}", epoch=run.epoch)
    return run


def _record(run: _Run, line: dict, seconds: float) -> bool:
    """Add a finished epoch's metrics ``line`` to ``run``; whether its validation NLL is the best so far."""
    improved = line["valid_nll"] < run.best_nll
    if improved:
        run.best_nll, run.best_epoch, run.since_best = line["valid_nll"], line["epoch"], 0
    else:
        run.since_best += 1
    run.epoch = line["epoch"]
    run.train_seconds += seconds
    run.history.append(line)
    return improved


def _save_epoch(run_dir: Path, model: PianoRollRNN, config: TrainConfig, run: _Run, improved: bool) -> None:
    """Keep epoch ``run.epoch`` in the crash-consistent order of ``rundir.py``: the metrics line durable, then
    the checkpoint, then ``best.pt`` when the epoch is the best so far."""
    write_history(run_dir, run.history)
    save_checkpoint(run_dir / "checkpoint.pt", {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "epoch": run.epoch, "model": model.state_dict(),
        "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(), "config": config.to_dict(),
        "torch_rng": torch.get_rng_state(), "best_valid_nll": run.best_nll, "best_epoch": run.best_epoch,
        "epochs_since_best": run.since_best, "train_seconds": run.train_seconds, "pretrain": run.pretrain,
    })
    if improved:
        save_checkpoint(run_dir / "best.pt", {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "epoch": run.epoch,
            "valid_nll": run.best_nll, "model": model.state_dict(), "config": config.to_dict(),
        })


def _final_evaluation(model: PianoRollRNN, config: TrainConfig, run_dir: Path, device, run: _Run, valid_t,
                      train_seqs, test_seqs, stopped: str, started: float) -> dict:
    """``final.json``: the best model's test metrics, ACC at the decision threshold chosen on the validation
    split, the trivial baselines, the run's facts (``stopped``: why the loop ended)."""
    best_payload = load_checkpoint(run_dir / "best.pt", device)
    load_model_state(model, best_payload["model"], run_dir / "best.pt")
    threshold = choose_threshold(model, valid_t, config.eval_batch_size)  # chosen on validation, applied to test
    test = (evaluate_tensors(model, _to_tensors(test_seqs, device), config.eval_batch_size, threshold=threshold)
            if test_seqs else {})
    return {
        "state": "finished",
        "dataset": config.dataset,
        "init": config.init,
        "hidden": config.model.hidden,
        "cell": config.model.cell,
        "output": config.model.output,
        "seed": config.seed,
        "nll": test.get("nll"),
        "acc": test.get("acc"),
        "expected_acc": test.get("expected_acc"),
        "acc_method": model.head.acc_method(),
        "threshold": threshold,  # decision threshold of highest validation ACC
        "acc_tuned": test.get("acc_tuned"),  # test ACC with keys on at p >= threshold
        "frames": test.get("frames", 0), "baselines": baselines(train_seqs, test_seqs) if test_seqs else None,
        "epochs": run.history[-1]["epoch"] if run.history else 0,
        "best_epoch": run.best_epoch,
        "best_valid_nll": run.best_nll,
        "stopped": stopped,
        "seconds": run.train_seconds,
        "pretrain_seconds": run.pretrain.get("seconds", 0.0),
        "total_seconds": time.perf_counter() - started,
        "pretrain": run.pretrain,
        "device": str(device), "train_pieces": len(train_seqs),
        "resources": process_usage(),  # this process only: a resumed run's earlier processes are not counted
        "train_frames": int(sum(len(s) for s in train_seqs)),
    }


def _epoch_line(epoch: int, train_nll, valid: dict, seconds: float, elapsed: float, optimizer) -> dict:
    return {
        "epoch": epoch, "train_nll": train_nll, "valid_nll": valid["nll"],
        "valid_acc": valid["acc"],
        "valid_expected_acc": valid["expected_acc"],
        "seconds": seconds,
        "elapsed": elapsed,
        "lr": current_lr(optimizer),
    }
