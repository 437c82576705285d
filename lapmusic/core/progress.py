"""The progress callback every long operation takes: ``progress(fraction, message)``, fraction in [0, 1]."""

from __future__ import annotations

from typing import Callable

Progress = Callable[[float, str], None]


def no_progress(fraction: float, message: str) -> None:
    """A progress callback that reports nothing."""
