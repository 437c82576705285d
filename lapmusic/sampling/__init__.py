"""Music from trained runs: generation and primers, the samples kept in run folders, audio, and musicality
statistics beside real pieces.

Modules: :mod:`.sample` (``generate``, ``sample_run``, ``parse_primer``), :mod:`.store` (saved samples),
:mod:`.audio` (``render_wav``), :mod:`.stats` (statistics).
"""

from lapmusic.sampling.audio import render_wav
from lapmusic.sampling.sample import generate, parse_primer, sample_run

__all__ = ["generate", "parse_primer", "render_wav", "sample_run"]
