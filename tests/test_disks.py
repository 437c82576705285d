"""Full and read-only disks, folders without write permission: one clear error line, for a training, an app
job and a command, and files written with an ordinary file's mode."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch
from conftest import synthetic_config, synthetic_dataset

from lapmusic.cli import main as cli
from lapmusic.core import io as io_module
from lapmusic.core.errors import LapMusicError
from lapmusic.jobs.limits import Quotas
from lapmusic.jobs.manager import JobManager
from lapmusic.jobs.runs import FAILED
from lapmusic.training.config import TrainConfig
from lapmusic.training.rundir import read_status
from lapmusic.training.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dataset():
    return synthetic_dataset((16, 4, 4), (10, 30))


def small_config(**fields) -> TrainConfig:
    return synthetic_config(**{"hidden": 8, "init": "random", "epochs": 2, **fields})


def _enospc_in_torch_save(obj, handle):
    """What torch.save does on a full disk: the OSError, then a RuntimeError raised while handling it."""
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0") from None


def test_a_full_disk_during_torch_save_is_a_clear_error_and_says_so_in_status(tmp_path, dataset, monkeypatch):
    monkeypatch.setattr(torch, "save", _enospc_in_torch_save)
    run = tmp_path / "run"
    run.mkdir()  # as an app job's: a folder train() did not create keeps its failed status (one it did is removed)
    with pytest.raises(LapMusicError, match=rf"could not write in {run}: the disk is full: free some space"):
        train(small_config(), run, dataset=dataset)
    assert "the disk is full" in read_status(run)["error"]
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


def test_an_app_job_on_a_full_disk_fails_with_the_reason(tmp_path, dataset, monkeypatch):
    # App jobs train in worker processes: the worker runs tests/fake_train.full_disk_train (real training,
    # torch.save failing as on a full disk) on the same pieces saved as a user dataset.
    from lapmusic.data.dataset import Dataset
    from lapmusic.data.user import save_user_dataset

    monkeypatch.setenv("LAPMUSIC_CACHE_DIR", str(tmp_path / "cache"))
    key = save_user_dataset(Dataset("user:synthetic", "synthetic", dataset.train, dataset.valid, dataset.test))
    here = Path(__file__).parent
    manager = JobManager(tmp_path / "runs", max_jobs=1, quotas=Quotas(per_session=None, per_client=None), cuda=False,
                         worker_env={"LAPMUSIC_WORKER_TRAIN": "fake_train:full_disk_train",
                                     "PYTHONPATH": os.pathsep.join(filter(None, [
                                         str(here.parent), str(here), os.environ.get("PYTHONPATH")]))})
    try:
        job = manager.wait(manager.submit(small_config(dataset=key).to_dict()).id, timeout=120)
        assert job.state == FAILED and "the disk is full" in job.error and "Traceback" not in job.error
        assert "the disk is full" in read_status(job.run_dir)["error"]
    finally:
        manager.close(requeue=False)


def test_a_full_disk_everywhere_is_one_cli_line(tmp_path, monkeypatch, capsys):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io_module, "new_temp", no_space)
    assert cli.main(["train", "--dataset", "jsb", "--hidden", "8", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the disk is full" in err and str(tmp_path / "run") in err


def test_an_os_error_escaping_a_command_is_one_cli_line(monkeypatch, capsys):
    def read_only(args):
        raise OSError(errno.EROFS, "Read-only file system", "/mnt/ro/out.mid")

    monkeypatch.setattr("lapmusic.cli.training.cmd_train", read_only)
    assert cli.main(["train", "--dataset", "jsb", "--hidden", "8", "--out", "x"]) == 2
    assert capsys.readouterr().err == ("error: could not write in /mnt/ro: the file system is read-only: choose a "
                                       "folder on a writable disk (Read-only file system)\n")


def test_a_read_only_file_system_is_a_clear_error(tmp_path, dataset, monkeypatch):
    real_open = os.open

    def read_only_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", path)
        return real_open(path, flags, *args, **kwargs)

    (tmp_path / "run").mkdir()
    monkeypatch.setattr(os, "open", read_only_open)
    with pytest.raises(LapMusicError, match="the file system is read-only: choose a folder on a writable disk"):
        train(small_config(), tmp_path / "run", dataset=dataset)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_a_folder_without_write_permission_is_a_clear_error(tmp_path, dataset):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(LapMusicError, match="permission denied: choose a folder you can write to"):
            train(small_config(), folder / "run", dataset=dataset)
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_get_the_mode_of_an_ordinary_file(tmp_path, umask, mode):
    # A runs folder shared by several users must stay readable to the others (mkstemp alone gives 0600).
    from lapmusic.core.io import atomic_write_json

    old = os.umask(umask)
    try:
        path = atomic_write_json(tmp_path / "status.json", {"state": "finished"})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode
