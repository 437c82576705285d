"""Training runs: the settings, the engine, the run folder and reading finished runs.

Modules: :mod:`.config` (``TrainConfig``), :mod:`.train` (``train``), :mod:`.epoch` (one epoch, evaluation
passes), :mod:`.pretrain` (the run's initialisation), :mod:`.optim` (optimizer, learning-rate schedule),
:mod:`.build` (a run's data), :mod:`.rundir` (status, metrics, checkpoints), :mod:`.results` (``load_run``,
``evaluate``, ``compare_runs``).
"""

from lapmusic.training.config import TrainConfig
from lapmusic.training.results import compare_runs, evaluate, load_run
from lapmusic.training.train import train

__all__ = ["TrainConfig", "compare_runs", "evaluate", "load_run", "train"]
