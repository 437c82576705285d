"""Which torch device a run uses (``auto``, ``cpu``, ``cuda``), and IEEE float32 on CUDA."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from lapmusic.core.errors import DeviceError


def resolve_device(name: str | torch.device | None) -> torch.device:
    """The torch device a run, a solver or an evaluation uses.

    Parameters
    ----------
    name : str, torch.device or None
        ``"auto"`` or None (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns
    -------
    torch.device
        The device. A CUDA device also switches cuDNN to IEEE float32 (:func:`ieee_fp32_on_cuda`).

    Raises
    ------
    DeviceError
        For ``cuda`` on a machine without a CUDA GPU, or a name torch does not know.
    """
    if isinstance(name, torch.device):
        device = name
    elif name is None or str(name).lower() == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        if str(name).lower().startswith("cuda") and not torch.cuda.is_available():
            raise DeviceError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu or auto")
        try:
            device = torch.device(str(name).lower())
        except RuntimeError as exc:
            raise DeviceError(f"unknown device {name!r}: use auto, cpu or cuda") from exc
    if device.type == "cuda":
        ieee_fp32_on_cuda()
    return device


def ieee_fp32_on_cuda() -> None:
    """Run cuDNN's recurrent layers in IEEE float32 instead of TF32, so that a GPU run follows the CPU run to
    float32 rounding (docs/reference.md, "GPU")."""
    # The legacy flag: setting torch's newer per-operator fp32_precision makes later reads of this one raise.
    torch.backends.cudnn.allow_tf32 = False


# Multiply-adds of one recurrent step (batch x hidden x hidden) up to which one CPU thread is used: at every
# size measured (batch 32, 128-1024 units) a second OpenMP thread was slower than one (docs/research/throughput.md).
SMALL_STEP = 2**25


def engine_threads(device: torch.device, hidden: int, batch_size: int) -> int:
    """Limit torch to one CPU thread when the engine's matrix products are too small to share between threads.

    Each of the engine's operations is a few microseconds of work; splitting it between OpenMP threads costs a
    fork and a barrier per operation, and on a machine whose other core is busy the barrier waits for a thread
    the scheduler has put aside, so two threads ran slower than one (up to 30x under load).

    Parameters
    ----------
    device : torch.device
        The run's device; only a CPU run is limited.
    hidden : int
        Recurrent units.
    batch_size : int
        Pieces per optimizer step.

    Returns
    -------
    int
        The torch CPU threads the run now uses: 1 for a CPU run with ``batch_size * hidden**2 <= SMALL_STEP``,
        else the threads torch had (unchanged).
    """
    if device.type == "cpu" and batch_size * hidden * hidden <= SMALL_STEP:
        torch.set_num_threads(1)
    return torch.get_num_threads()


@contextmanager
def threads_kept() -> Iterator[None]:
    """Give torch back its CPU thread count on exit, so that :func:`engine_threads` limits one run, not its caller.

    Yields
    ------
    None
    """
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
