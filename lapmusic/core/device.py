"""Which torch device a run uses (``auto``, ``cpu``, ``cuda``), and IEEE float32 on CUDA."""

from __future__ import annotations

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
