"""Music from trained runs: generation and primers, the samples kept in run folders, audio, and musicality
statistics beside real pieces.

Modules: :mod:`.sample` (``generate``, ``sample_run``), :mod:`.primer` (``parse_primer``), :mod:`.store` (saved samples),
:mod:`.audio` (``render_wav``), :mod:`.stats` (statistics) and :mod:`.stats_sources` (their rolls from files
or a run).
"""

from lapmusic.sampling.audio import render_wav
from lapmusic.sampling.primer import parse_primer
from lapmusic.sampling.sample import generate, sample_run

__all__ = ["generate", "parse_primer", "render_wav", "sample_run"]
