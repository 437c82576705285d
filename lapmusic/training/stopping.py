"""How a training process ends when it does not finish: SIGTERM handled like Ctrl-C, and the folder of a run
that failed before its first checkpoint removed when this call created it.

:func:`lapmusic.training.train.train` uses both. A run stopped by SIGTERM (``kill``, a service manager, a
closing terminal session) keeps its last checkpoint and says ``cancelled`` in ``status.json``, as after Ctrl-C,
instead of staying ``running`` for ever. A run that failed before anything worth keeping was saved (bad data, a
refused LAE file, a diverging initial network) leaves no folder behind when ``train`` created it, so the same
``--out`` can be used again at once; a folder that existed before (the app's jobs create theirs, with their
``config.json``) keeps its ``failed`` status and the reason, for the page to show.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

from lapmusic.core.io import remove_stale_temp_files
from lapmusic.core.lock import LOCK_NAME

# What train() writes into a run folder before its first checkpoint (and nothing else).
_STARTING_FILES = ("config.json", "status.json", "data.json", "metrics.jsonl", "lae.npz", LOCK_NAME)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: handled as Ctrl-C is (a :class:`KeyboardInterrupt`), with its own message."""


@contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread, when nobody else handles it.

    A process that installed its own SIGTERM handler (the job worker sets its cancel event) keeps it; other
    threads cannot install handlers, so they are left alone too. A second SIGTERM while the first is being
    handled is ignored, so that the status update it triggers is not cut short; the previous handler is back
    after the block.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def first_missing(folder: Path) -> Path | None:
    """The outermost of ``folder`` and its parents that does not exist yet (what creating it would create);
    ``None`` when ``folder`` exists."""
    folder = Path(folder)
    if folder.exists():
        return None
    missing = folder
    for parent in folder.parents:
        if parent.exists():
            break
        missing = parent
    return missing


def remove_failed_start(run_dir: Path, created: Path | None) -> bool:
    """Remove the folder of a run that failed before its first checkpoint, when this process created it.

    Only the files ``train`` writes before a checkpoint are deleted, then the empty folders up to ``created``
    (the outermost folder ``train`` created); a folder holding anything else, or a checkpoint, is left as it is.
    Call it while holding the folder's writer lock.

    Parameters
    ----------
    run_dir : Path
        The run folder.
    created : Path or None
        :func:`first_missing` of ``run_dir`` before training; ``None`` (it existed) removes nothing.

    Returns
    -------
    bool
        Whether the folder is gone. Never raises.
    """
    run_dir = Path(run_dir)
    if created is None or (run_dir / "checkpoint.pt").exists():
        return False
    try:
        remove_stale_temp_files(run_dir)
        for name in _STARTING_FILES:
            (run_dir / name).unlink(missing_ok=True)
        folder = run_dir
        while True:
            os.rmdir(folder)  # fails, and stops, on a folder that holds anything else
            if folder == created or folder.parent == folder:
                return True
            folder = folder.parent
    except OSError:
        return not run_dir.exists()
