"""Training runs: the settings, the engine, the run folder and reading finished runs.

Modules: :mod:`.config` (``TrainConfig``), :mod:`.train` (``train``), :mod:`.epoch` (one epoch, evaluation
passes), :mod:`.pretrain` (the run's initialisation), :mod:`.optim` (optimizer, learning-rate schedule),
:mod:`.build` (a run's data), :mod:`.rundir` (status, metrics, checkpoints), :mod:`.results` (``load_run``,
``evaluate``, ``compare_runs``).

This package imports none of its modules, so that importing one of them (a worker process, the CLI's early
checks) costs only what that module needs: import each name from its module.
"""
