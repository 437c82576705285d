"""How much one sampling request may ask for: the one home of the limits the app and ``lapmusic generate`` share.

A request is bounded before anything of its size is allocated: its length in frames and in seconds of audio
(the WAV grows with both), its primer's frames, and the number of variations drawn at once. The messages say
what was asked, the limit and what to ask for instead; the app shows them on the page, the CLI prints them as
one line and exits 2.
"""

from __future__ import annotations

import math

from lapmusic.core.errors import LapMusicError

MAX_SAMPLE_SECONDS = 300.0
"""Longest sample when played, primer included (5 minutes: the WAV stays a few tens of MB at most)."""

MAX_SAMPLE_FRAMES = 4096
"""Most frames in one sample, primer included, whatever the frame's duration (bounds the sampling loop)."""

MAX_PRIMER_FRAMES = 256
"""Longest primer, in frames."""

MAX_VARIATIONS = 8
"""Most variations drawn by one request (one click, one ``generate``)."""

MAX_SAMPLES = 256
"""Most samples drawn at once by the library (``generate``) and ``lapmusic stats --run``: with
:data:`MAX_SAMPLE_FRAMES` frames each, 92 MB of 0/1 keys at most."""


def longest_steps(step_seconds: float, primer_frames: int = 0) -> int:
    """The most frames that may be generated after a primer.

    Parameters
    ----------
    step_seconds : float
        Seconds per frame when played, ``> 0``.
    primer_frames : int, default=0
        Frames of the primer, played before the generated ones.

    Returns
    -------
    int
        ``min(MAX_SAMPLE_FRAMES, floor(MAX_SAMPLE_SECONDS / step_seconds)) - primer_frames``, at least 0.
    """
    by_time = math.floor(MAX_SAMPLE_SECONDS / step_seconds + 1e-9) if step_seconds > 0 else 0
    return max(0, min(MAX_SAMPLE_FRAMES, by_time) - int(primer_frames))


def check_primer_frames(frames: int, what: str) -> None:
    """Refuse a primer of more than :data:`MAX_PRIMER_FRAMES` frames.

    Parameters
    ----------
    frames : int
        The primer's length in frames.
    what : str
        How the message names the primer, e.g. ``"primer 'chord:60:9999'"``.

    Raises
    ------
    LapMusicError
        ``frames > MAX_PRIMER_FRAMES``.
    """
    if frames > MAX_PRIMER_FRAMES:
        raise LapMusicError(
            f"{what} is {frames:,} frames long; a primer may have at most {MAX_PRIMER_FRAMES} frames: "
            "ask for fewer frames"
        )


def check_request(steps: int, step_seconds: float, primer_frames: int = 0, variations: int = 1) -> None:
    """Refuse a sampling request longer or larger than the limits above, before any sampling.

    Parameters
    ----------
    steps : int
        Frames to generate after the primer, ``>= 1``.
    step_seconds : float
        Seconds per frame when played, ``> 0``.
    primer_frames : int, default=0
        Frames of the primer.
    variations : int, default=1
        Samples drawn at once.

    Raises
    ------
    LapMusicError
        Too many frames, seconds, primer frames or variations; the message names the limit and what to
        ask for.
    """
    if not 1 <= variations <= MAX_VARIATIONS:
        raise LapMusicError(f"variations must be 1 to {MAX_VARIATIONS} per request, got {variations}")
    check_primer_frames(primer_frames, "the primer")
    frames = primer_frames + steps
    seconds = frames * step_seconds
    if frames > MAX_SAMPLE_FRAMES or seconds > MAX_SAMPLE_SECONDS + 1e-9:
        most = longest_steps(step_seconds, primer_frames)
        primer = f" plus {primer_frames} primer frames" if primer_frames else ""
        raise LapMusicError(
            f"{steps:,} steps of {step_seconds:.3g} s{primer} make {_duration(seconds)} ({frames:,} frames); a sample "
            f"may last at most {MAX_SAMPLE_SECONDS:g} s and {MAX_SAMPLE_FRAMES:,} frames: ask for at most "
            f"{most:,} steps" + (" or a shorter step" if most < 1 else "")
        )


def _duration(seconds: float) -> str:
    return f"{seconds:,.0f} s" if seconds < 7200 else f"{seconds / 3600:,.0f} hours"
