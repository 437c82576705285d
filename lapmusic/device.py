"""Which torch device a run uses (``auto``, ``cpu``, ``cuda``), and IEEE float32 on CUDA."""

from __future__ import annotations

import torch

from .errors import LapMusicError


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error. A CUDA device also
    switches cuDNN to IEEE float32 (:func:`ieee_fp32_on_cuda`)."""
    if isinstance(name, torch.device):
        device = name
    elif name in (None, "auto"):
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        if str(name).startswith("cuda") and not torch.cuda.is_available():
            raise LapMusicError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu or auto")
        try:
            device = torch.device(name)
        except RuntimeError as exc:
            raise LapMusicError(f"unknown device {name!r}: use auto, cpu or cuda") from exc
    if device.type == "cuda":
        ieee_fp32_on_cuda()
    return device


def ieee_fp32_on_cuda() -> None:
    """Run cuDNN's recurrent layers (and convolutions) in IEEE float32 instead of TF32.

    torch lets cuDNN use TF32 (10-bit mantissa products) for float32 RNNs on Ampere and later GPUs by
    default; on an H200 that made a 16-unit network's logits differ from the CPU's by up to 8e-5 and the
    LAE start's pre-fitted readout by enough to move its epoch-0 NLL (tests/test_cuda.py). With IEEE float32 a
    GPU run follows the CPU run to float32 rounding; docs/training.md ("GPU figures") has the cost. The
    legacy flag, not torch 2.9's per-operator ``fp32_precision``: setting the new one makes any later read of
    ``torch.backends.cudnn.allow_tf32`` (by us or another library) raise.
    """
    torch.backends.cudnn.allow_tf32 = False
