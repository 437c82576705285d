"""The training engine: LAE pre-training, mini-batches with truncated BPTT, checkpoints, resume, cancel.

A run lives in a folder (layout in ``docs/architecture.md``)::

    RUNDIR/config.json    the TrainConfig
    RUNDIR/status.json    {"state", "epoch", "epochs", "fraction", "message", "error", "updated"}
    RUNDIR/metrics.jsonl  one JSON line per epoch (epoch 0 = the network right after initialisation)
    RUNDIR/lae.npz        the LAE (init == "lae")
    RUNDIR/checkpoint.pt  last good state: model, optimizer, scheduler, epoch, config, RNG
    RUNDIR/best.pt        the model with the lowest validation NLL so far
    RUNDIR/final.json     test metrics of the best model, epochs, seconds, device, ...

Every file is replaced atomically, so a reader (the app polls ``status.json`` and ``metrics.jsonl``) never
sees half a file, and a crash or a cancel leaves the last good checkpoint in place.

Batching and one epoch (``train_epoch``) live in ``epoch.py``, the settings (``TrainConfig``) in ``config.py``,
loading and comparing finished runs in ``results.py``; this module re-exports their names.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lapmusic import N_KEYS
from lapmusic.core.device import resolve_device
from lapmusic.core.errors import CheckpointError, LapMusicError
from lapmusic.core.io import atomic_write_json, storage_cause, storage_error
from lapmusic.core.lock import run_lock
from lapmusic.core.progress import Progress
from lapmusic.model.chordvocab import build_vocabulary
from lapmusic.model.metrics import baselines
from lapmusic.model.nade import EXPECTED_ACC_SAMPLES
from lapmusic.model.repeatmix import repeat_share
from lapmusic.model.rnn import PianoRollRNN
from lapmusic.training.build import build_model, config_from_run, load_model_state, run_splits
from lapmusic.training.config import (
    RESUMABLE_CHANGES,
    TrainConfig,
)
from lapmusic.training.epoch import (
    TrainingCancelled,
    TrainingDiverged,
    _to_tensors,
    choose_threshold,
    evaluate_tensors,
    key_density,
    noise_generator,
    train_epoch,
)
from lapmusic.training.pretrain import initialise
from lapmusic.training.rundir import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    StatusWriter,
    check_resume_payload,
    load_checkpoint,
    no_checkpoint_message,
    reconcile,
    save_checkpoint,
    write_history,
)

EPOCH_ACC_SAMPLES = 2  # NADE: sampled frames per frame for the per-epoch validation expected ACC (test: 10)

# A validation NLL above this after a training epoch means the run diverged (see _check_divergence).
DIVERGED_NLL = 2 * N_KEYS * math.log(2.0)


# ------------------------------------------------------------------------------------------ run folder


def _parameter_groups(model: PianoRollRNN, config: TrainConfig) -> list[dict]:
    """One group per parameter tensor; with ``relative_lr`` each weight matrix's learning rate is scaled by
    its RMS at the start of training over the RMS of PyTorch's default init (``1 / sqrt(3 * hidden)``).

    Why: Adam moves every parameter by about ``lr`` per step whatever its scale. After the LAE init,
    ``W_in = alpha * A`` has entries around 1e-3, so ``lr = 1e-3`` rewrites it within a few steps and the
    pre-training is lost. Scaling each matrix's rate by its own size gives every matrix the same *relative*
    step; for the random init all matrices have the default RMS, so nothing changes there. Biases keep ``lr``.
    """
    reference = 1.0 / math.sqrt(3.0 * config.hidden)
    groups = []
    for name, parameter in model.named_parameters():
        factor = 1.0
        if config.relative_lr and parameter.dim() > 1:
            rms = float(parameter.detach().pow(2).mean().sqrt())
            # A zero-initialised matrix (the readout skip) has no scale of its own: it keeps lr.
            factor = max(rms / reference, 1e-3) if math.isfinite(rms) and rms > 0 else 1.0
        groups.append({"params": [parameter], "lr": config.lr * factor, "name": name, "lr_factor": factor})
    return groups


def _make_optimizer(model: PianoRollRNN, config: TrainConfig) -> torch.optim.Optimizer:
    groups = _parameter_groups(model, config)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)


def _make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience,
        min_lr=[config.min_lr * group["lr_factor"] for group in optimizer.param_groups])


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
    """Train a network as ``config`` says and keep everything in ``run_dir``; returns ``final.json``'s content.

    - ``progress(fraction, message)`` is called often (every batch); ``status.json`` is updated at most
      once a second with the same information.
    - ``cancel``: anything with ``is_set()``, checked every batch. A cancelled run keeps its last
      checkpoint (end of the last finished epoch), gets state ``cancelled``, and this function returns
      ``{"state": "cancelled", "epoch": ...}`` (no ``final.json``); ``resume=True`` continues it.
    - ``resume=True`` continues from ``checkpoint.pt``; ``config`` may be ``None`` (read from the folder) or
      differ only in ``epochs`` / ``patience`` / ``max_seconds`` (to train longer).
    - ``dataset``: an object with ``.train``, ``.valid``, ``.test`` lists of ``(T, 88)`` arrays; by default
      ``lapmusic.data.load_dataset(config.dataset)``.

    Raises :class:`TrainingDiverged` on a NaN/inf or absurd loss and :class:`LapMusicError` for bad settings,
    a full disk or a folder it cannot write; in those cases ``status.json`` says ``failed`` with the message
    (when it can still be written). The folder's writer lock (:func:`lapmusic.lock.run_lock`) is held
    throughout: a second writer gets :class:`lapmusic.lock.RunFolderBusy` before anything is written.
    """
    run_dir = Path(run_dir)
    if resume and not run_dir.is_dir():
        raise CheckpointError(f"run folder {run_dir} does not exist: nothing to resume")
    if not resume:
        if config is None:
            raise LapMusicError("a TrainConfig is needed to start a new run")
        config.validate()  # before the lock: bad settings create no folder
    with run_lock(run_dir):
        return _train_locked(config, run_dir, progress, cancel, resume, dataset)


def _train_locked(config: TrainConfig | None, run_dir: Path, progress, cancel, resume: bool, dataset) -> dict:
    if resume:
        saved = config_from_run(run_dir)
        if config is not None:
            before = saved.to_dict()
            changed = {k for k, v in config.to_dict().items() if before[k] != v} - set(RESUMABLE_CHANGES)
            if changed:
                raise LapMusicError(
                    f"cannot resume {run_dir} with different settings {sorted(changed)}; "
                    f"only {', '.join(RESUMABLE_CHANGES[:-1])} and {RESUMABLE_CHANGES[-1]} may change"
                )
            for name in RESUMABLE_CHANGES:
                setattr(saved, name, getattr(config, name))
            saved.validate()
        config = saved
        if not (run_dir / "checkpoint.pt").exists():
            raise CheckpointError(no_checkpoint_message(run_dir, config.to_dict()))
    else:
        if (run_dir / "checkpoint.pt").exists():
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
    except KeyboardInterrupt:
        # Ctrl-C in the terminal: like a cancel, the last checkpoint stays and --resume continues.
        status.try_update(state="cancelled", message="interrupted: the last checkpoint is kept")
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


def _train(config: TrainConfig, run_dir: Path, status: StatusWriter, report, cancel, resume: bool,
           dataset) -> dict:
    started = time.perf_counter()
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    if dataset is None:
        report(0.0, f"loading dataset {config.dataset}")
    train_seqs, valid_seqs, test_seqs = run_splits(config, dataset)
    if not any(len(s) >= 2 for s in train_seqs):
        raise LapMusicError(f"dataset {config.dataset!r} has no training piece of two or more frames")
    if not any(len(s) >= 2 for s in valid_seqs):
        raise LapMusicError(f"dataset {config.dataset!r} has no validation piece of two or more frames")
    train_t = _to_tensors(train_seqs, device)
    valid_t = _to_tensors(valid_seqs, device)
    slots = config.epochs + 1  # slot 0: pre-training and the evaluation of the initial network
    density = key_density(train_t) if config.input_noise > 0 else None

    model = build_model(config)
    if config.nade_vocab:  # the training split's commonest chords (a checkpoint, when resuming, holds the same)
        model.nade.set_vocabulary(*build_vocabulary(train_seqs, config.nade_vocab))
    if config.nade_repeat:  # the repeat gate starts at half the training split's repeated-frame share
        model.nade.set_repeat_share(repeat_share(train_seqs, config.nade_repeat_window))
    pretrain: dict[str, Any] = {}
    if resume:
        path = run_dir / "checkpoint.pt"
        payload = load_checkpoint(path, device)
        saved_config = payload.get("config")
        if not isinstance(saved_config, dict) or saved_config.get("hidden") != config.hidden:
            raise CheckpointError(f"{path} does not belong to this run's config.json")
        check_resume_payload(payload, path)
        load_model_state(model, payload["model"], path)
        model.to(device)
        optimizer = _make_optimizer(model, config)
        scheduler = _make_scheduler(optimizer, config)
        try:
            optimizer.load_state_dict(payload["optimizer"])
            scheduler.load_state_dict(payload["scheduler"])
            torch.set_rng_state(payload["torch_rng"].cpu())
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{path} holds an optimizer or random state this run cannot use "
                                  f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                                  "start the run again in a new folder") from exc
        start_epoch = payload["epoch"] + 1
        best_nll = float(payload["best_valid_nll"])
        best_epoch = payload["best_epoch"]
        since_best = payload["epochs_since_best"]
        train_seconds = float(payload["train_seconds"])
        pretrain = dict(payload.get("pretrain") or {})
        history = reconcile(run_dir, payload, device)  # drops metrics lines past the checkpoint, fixes best.pt
        report(start_epoch / slots, f"resumed after epoch {start_epoch - 1}", epoch=start_epoch - 1)
    else:
        pretrain = initialise(model, config, train_seqs, run_dir, device,
                               lambda f, m: report(0.9 * f / slots, m), cancel)
        if cancel is not None and cancel.is_set():
            raise TrainingCancelled("cancelled")
        model.to(device)
        optimizer = _make_optimizer(model, config)
        scheduler = _make_scheduler(optimizer, config)
        report(0.9 / slots, "evaluating the initial network")
        initial_train = evaluate_tensors(model, train_t, config.eval_batch_size, acc_samples=EPOCH_ACC_SAMPLES)
        initial_valid = evaluate_tensors(model, valid_t, config.eval_batch_size, acc_samples=EPOCH_ACC_SAMPLES)
        if initial_valid["nll"] is None or not math.isfinite(initial_valid["nll"]):
            raise TrainingDiverged("the initial network gives a NaN/inf validation NLL; try a smaller --alpha")
        train_seconds = 0.0
        history = [_epoch_line(0, initial_train["nll"], initial_valid, 0.0, time.perf_counter() - started,
                               optimizer)]
        best_nll, best_epoch, since_best, start_epoch = initial_valid["nll"], 0, 0, 1
        # Crash-consistent order (rundir.py): metrics line durable, then the checkpoint, then best.pt.
        write_history(run_dir, history)
        save_checkpoint(run_dir / "checkpoint.pt", _checkpoint_payload(
            model, optimizer, scheduler, config, 0, best_nll, best_epoch, since_best, train_seconds, pretrain))
        _save_best(run_dir, model, config, 0, best_nll)
        report(1 / slots, f"epoch 0: valid NLL {initial_valid['nll']:.3f}", epoch=0)

    stopped = "epochs"
    for epoch in range(start_epoch, config.epochs + 1):
        if config.patience is not None and since_best >= config.patience:
            stopped = "early stopping"
            break
        if config.max_seconds is not None and train_seconds >= config.max_seconds:
            stopped = "time budget"  # train_seconds survives resumes: the budget is the run's, not the process's
            break
        epoch_started = time.perf_counter()
        rng = np.random.default_rng([config.seed, epoch])
        noise = noise_generator(config.input_noise, config.seed, epoch, device)

        def on_batch(done: int, total: int, epoch=epoch) -> None:
            report((epoch + done / total) / slots, f"epoch {epoch}/{config.epochs}: batch {done}/{total}",
                   epoch=epoch - 1)

        result = train_epoch(model, optimizer, train_t, batch_size=config.batch_size, bptt=config.bptt,
                             clip=config.clip, rng=rng, on_batch=on_batch, cancel=cancel,
                             warmup_steps=config.warmup_steps, input_noise=config.input_noise,
                             density=density, noise_generator=noise)
        valid = evaluate_tensors(model, valid_t, config.eval_batch_size, acc_samples=EPOCH_ACC_SAMPLES)
        _check_divergence(epoch, result["nll"], valid["nll"])
        seconds = time.perf_counter() - epoch_started
        train_seconds += seconds
        line = _epoch_line(epoch, result["nll"], valid, seconds, 0.0, optimizer)
        scheduler.step(valid["nll"])
        improved = valid["nll"] < best_nll
        if improved:
            best_nll, best_epoch, since_best = valid["nll"], epoch, 0
        else:
            since_best += 1
        line["elapsed"] = (history[-1].get("elapsed", 0.0) if history else 0.0) + seconds
        history.append(line)
        # Crash-consistent order (rundir.py): metrics line durable, then the checkpoint, then best.pt.
        write_history(run_dir, history)
        save_checkpoint(run_dir / "checkpoint.pt", _checkpoint_payload(
            model, optimizer, scheduler, config, epoch, best_nll, best_epoch, since_best, train_seconds, pretrain))
        if improved:
            _save_best(run_dir, model, config, epoch, best_nll)
        report((epoch + 1) / slots, f"epoch {epoch}: train NLL {result['nll']:.3f}, valid NLL {valid['nll']:.3f}",
               epoch=epoch)

    report(0.99, "evaluating the best model on the test split")
    best_payload = load_checkpoint(run_dir / "best.pt", device)
    load_model_state(model, best_payload["model"], run_dir / "best.pt")
    threshold = choose_threshold(model, valid_t, config.eval_batch_size)  # chosen on validation, applied to test
    test = (evaluate_tensors(model, _to_tensors(test_seqs, device), config.eval_batch_size, threshold=threshold)
            if test_seqs else {})
    epochs_run = history[-1]["epoch"] if history else 0
    final = {
        "state": "finished",
        "dataset": config.dataset,
        "init": config.init,
        "hidden": config.hidden,
        "cell": config.cell,
        "output": config.output,
        "seed": config.seed,
        "nll": test.get("nll"),
        "acc": test.get("acc"),
        "expected_acc": test.get("expected_acc"),
        "acc_method": acc_method(config),
        "threshold": threshold,  # decision threshold of highest validation ACC
        "acc_tuned": test.get("acc_tuned"),  # test ACC with keys on at p >= threshold
        "frames": test.get("frames", 0),
        "baselines": baselines(train_seqs, test_seqs) if test_seqs else None,
        "epochs": epochs_run,
        "best_epoch": best_epoch,
        "best_valid_nll": best_nll,
        "stopped": stopped,
        "seconds": train_seconds,
        "pretrain_seconds": pretrain.get("seconds", 0.0),
        "total_seconds": time.perf_counter() - started,
        "pretrain": pretrain,
        "device": str(device),
        "train_pieces": len(train_seqs),
        "train_frames": int(sum(len(s) for s in train_seqs)),
    }
    atomic_write_json(run_dir / "final.json", final)
    status.update(force=True, state="finished", fraction=1.0, epoch=epochs_run,
                  message=f"finished: test NLL {final['nll']:.3f}" if final["nll"] is not None else "finished")
    return final


def acc_method(config: TrainConfig) -> str:
    """How ACC and expected ACC were computed for this output (written into final.json)."""
    repeat = "the previous frame when the repeat gate gives it p >= 0.5, else " if config.nade_repeat else ""
    if config.nade_repeat and config.nade_repeat_window > 1:
        repeat = (f"the likeliest of the last {config.nade_repeat_window} frames read when the repeat gate gives the "
                  "copy p >= 0.5, else ")
    if config.nade_vocab:
        return (f"ACC: greedy frame ({repeat}the vocabulary's most probable chord when the gate gives it p >= 0.5, "
                f"else the NADE's greedy frame); expected ACC: {EXPECTED_ACC_SAMPLES} frames sampled from the mixture "
                "per predicted frame")
    if config.nade_repeat:
        return (f"ACC: greedy frame ({repeat}the NADE's greedy frame); expected ACC: {EXPECTED_ACC_SAMPLES} frames "
                "sampled from the mixture per predicted frame")
    if config.output == "nade":
        return (f"ACC: greedy frame (key by key, conditional p >= 0.5); expected ACC: {EXPECTED_ACC_SAMPLES} "
                "sampled frames per predicted frame")
    return "ACC: each key p >= 0.5; expected ACC: soft counts of the key probabilities"


def _check_divergence(epoch: int, train_nll, valid_nll) -> None:
    """Stop a run whose loss is NaN/inf or absurd: a validation NLL above ``DIVERGED_NLL`` after a training
    epoch is twice the NLL of predicting 0.5 for every key (``88 ln 2 = 61`` nats per frame), which any
    network that learned anything beats; it comes from a learning rate far too high (e.g. ``--lr 1e6``)."""
    if valid_nll is None or not math.isfinite(valid_nll) or train_nll is None or not math.isfinite(train_nll):
        raise TrainingDiverged(
            f"epoch {epoch} gave a NaN/inf NLL; the run keeps its last good checkpoint (epoch {epoch - 1}). "
            "Try a lower --lr")
    if valid_nll > DIVERGED_NLL:
        raise TrainingDiverged(
            f"epoch {epoch} diverged: validation NLL {valid_nll:.4g} is far above {DIVERGED_NLL:.0f}, twice the NLL "
            f"of predicting 0.5 for every key; the run keeps its last good checkpoint (epoch {epoch - 1}). "
            "Try a lower --lr")


def _epoch_line(epoch: int, train_nll, valid: dict, seconds: float, elapsed: float, optimizer) -> dict:
    return {
        "epoch": epoch,
        "train_nll": train_nll,
        "valid_nll": valid["nll"],
        "valid_acc": valid["acc"],
        "valid_expected_acc": valid["expected_acc"],
        "seconds": seconds,
        "elapsed": elapsed,
        "lr": optimizer.param_groups[0]["lr"] / optimizer.param_groups[0].get("lr_factor", 1.0),
    }


def _checkpoint_payload(model, optimizer, scheduler, config, epoch, best_nll, best_epoch, since_best,
                        train_seconds, pretrain) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "config": config.to_dict(),
        "torch_rng": torch.get_rng_state(),
        "best_valid_nll": best_nll,
        "best_epoch": best_epoch,
        "epochs_since_best": since_best,
        "train_seconds": train_seconds,
        "pretrain": pretrain,
    }


def _save_best(run_dir: Path, model, config: TrainConfig, epoch: int, valid_nll: float) -> None:
    save_checkpoint(run_dir / "best.pt", {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "epoch": epoch, "valid_nll": valid_nll,
        "model": model.state_dict(), "config": config.to_dict(),
    })
