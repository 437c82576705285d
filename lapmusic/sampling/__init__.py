"""Music from trained runs: generation and primers, the samples kept in run folders, audio, and musicality
statistics beside real pieces.

Modules: :mod:`.sample` (``generate``, ``sample_run``), :mod:`.primer` (``parse_primer``), :mod:`.store` (saved samples),
:mod:`.audio` (``render_wav``), :mod:`.stats` (statistics) and :mod:`.stats_sources` (their rolls from files
or a run).

This package imports none of its modules, so that importing one of them (a worker process, the CLI's early
checks) costs only what that module needs: import each name from its module.
"""
