"""lapmusic.jobs.gridrun.run_grid: what ends a run for good and what is retried, with an engine that only plays
back what each attempt left in the run folder (no processes)."""

from __future__ import annotations

import json
from pathlib import Path

from lapmusic.jobs.gridrun import GridRun, run_grid


class PlaybackEngine:
    """Each submitted attempt "runs" at once: ``attempts[n]`` writes the run folder as that attempt ended."""

    name, capacity = "playback", 1

    def __init__(self, attempts):
        self.attempts, self.submitted = list(attempts), 0

    def submit(self, argv, log_path, wait_free=None):
        run_dir = Path(argv[-1])
        code, error = self.attempts[self.submitted](run_dir)
        self.submitted += 1
        return (code, error)

    def wait(self, handles, timeout):
        return list(handles)

    def result(self, handle):
        return handle

    def close(self):
        pass


def ended(state: str, *, finished: bool = False, code: int = 0, error: str | None = None):
    def attempt(run_dir: Path):
        (run_dir / "status.json").write_text(json.dumps({"state": state}))
        if finished:
            (run_dir / "final.json").write_text("{}")
        return code, error
    return attempt


def one_run(tmp_path) -> GridRun:
    run_dir = tmp_path / "runs" / "cell_s0"
    run_dir.mkdir(parents=True)
    return GridRun(run_dir=run_dir, name="cell", seed=0)


def test_a_cancel_file_ends_the_run_for_good(tmp_path):
    run = one_run(tmp_path)
    (run.run_dir / "cancel").touch()
    engine = PlaybackEngine([ended("cancelled")])
    (run,) = run_grid([run], engine, say=lambda line: None)
    assert (run.outcome, run.attempts, engine.submitted) == ("cancelled", 1, 1)


def test_a_run_stopped_by_a_signal_without_its_cancel_file_is_retried(tmp_path):
    # Its Ray worker died and the node's cleanup sent the training SIGTERM: nobody asked the grid to stop it.
    run = one_run(tmp_path)
    lines = []
    engine = PlaybackEngine([ended("cancelled", code=None, error="WorkerCrashedError: the worker died"),
                             ended("finished", finished=True)])
    (run,) = run_grid([run], engine, say=lines.append)
    assert (run.outcome, run.attempts, engine.submitted) == ("finished", 2, 2)
    assert run.error == "WorkerCrashedError: the worker died"  # what ended the first attempt, for the report
    assert any(line.startswith("retrying cell seed 0 (attempt 2 of 3)") for line in lines)


def test_a_run_stopped_by_signals_every_time_fails_after_its_retries(tmp_path):
    run = one_run(tmp_path)
    engine = PlaybackEngine([ended("cancelled")] * 3)
    (run,) = run_grid([run], engine, retries=2, say=lambda line: None)
    assert (run.outcome, run.attempts) == ("failed", 3)
    assert run.error == "stopped by a signal without its cancel file"
