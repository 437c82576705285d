"""Shared test fixtures.

Real-data tests use ``real_data_dir`` and skip with a reason when LAPMUSIC_DATA_DIR is unset (CI points it
at ../shared/datasets). Everything else runs on data the tests make. The user cache and the runs folder
go to a temporary folder unless the environment names them, so tests never touch a user's files.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_folders(tmp_path_factory):
    for variable, name in (("LAPMUSIC_CACHE_DIR", "cache"), ("LAPMUSIC_RUNS_DIR", "runs")):
        if not os.environ.get(variable):
            os.environ[variable] = str(tmp_path_factory.mktemp(name))
    yield


@pytest.fixture
def real_data_dir() -> Path:
    value = os.environ.get("LAPMUSIC_DATA_DIR")
    if not value:
        pytest.skip("LAPMUSIC_DATA_DIR is unset: real benchmark data not available")
    path = Path(value)
    if not (path / "JSB_Chorales.mat").is_file():
        pytest.skip(f"LAPMUSIC_DATA_DIR={value} holds no JSB_Chorales.mat")
    return path


def load_script(relative: str):
    """A script of the repository (e.g. ``scripts/evaluate_sweeps.py``) imported as a module, for its tests."""
    path = Path(__file__).resolve().parent.parent / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_rolls(n: int, length: int | tuple[int, int], *, seed: int = 0, density: float = 0.06) -> list[np.ndarray]:
    """``n`` random ``(T, 88)`` rolls made of held notes (runs of 1-4 frames), lengths fixed or in a range."""
    rng = np.random.default_rng(seed)
    rolls = []
    for _ in range(n):
        t = length if isinstance(length, int) else int(rng.integers(length[0], length[1] + 1))
        roll = np.zeros((t, 88), dtype=np.uint8)
        for key in rng.choice(88, size=12, replace=False):
            frame = 0
            while frame < t:
                run = int(rng.integers(1, 5))
                if rng.random() < density * 4:
                    roll[frame:frame + run, key] = 1
                frame += run + int(rng.integers(1, 4))  # a gap, so runs stay separate notes
        rolls.append(roll)
    return rolls


@pytest.fixture
def make_rolls():
    return random_rolls


def synthetic_dataset(sizes: tuple[int, int, int], length: tuple[int, int], density: float = 0.15):
    """A dataset-like object (``key`` "synthetic", ``train``/``valid``/``test``) of random rolls, seeds 0/1/2."""
    from types import SimpleNamespace

    train, valid, test = (random_rolls(n, length, seed=seed, density=density) for seed, n in enumerate(sizes))
    return SimpleNamespace(key="synthetic", train=train, valid=valid, test=test)


def synthetic_config(**fields):
    """A small CPU ``TrainConfig`` on the "synthetic" dataset (lr 1e-2, batches of 6, bptt 8, seed 3, no
    early stopping); ``fields`` override or add settings."""
    from lapmusic.training.config import TrainConfig

    values = dict(dataset="synthetic", lr=1e-2, batch_size=6, bptt=8, seed=3, device="cpu", patience=None)
    values.update(fields)
    return TrainConfig.from_settings(values)


def chorale_like_piece(rng: np.random.Generator, frames: int) -> np.ndarray:
    """A ``(frames, 88)`` roll a network learns fast: a repeating I-IV-V-I progression, a random melody on top."""
    chords = [(48, 52, 55), (53, 57, 60), (55, 59, 62), (48, 52, 55)]
    roll = np.zeros((frames, 88), dtype=np.uint8)
    for t in range(frames):
        for pitch in chords[(t // 2) % 4]:
            roll[t, pitch - 21] = 1
        roll[t, 72 - 21 + int(rng.integers(0, 8))] = 1
    return roll


@pytest.fixture
def one_torch_thread():
    """The machine has 2 cores: one torch thread per test is faster than fighting over them."""
    import torch

    from lapmusic.core.device import threads_kept

    with threads_kept():
        torch.set_num_threads(1)
        yield


REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def cache_dir_env(path: str):
    """``LAPMUSIC_CACHE_DIR`` set to ``path`` in this process for the block (where datasets are saved and read)."""
    old = os.environ.get("LAPMUSIC_CACHE_DIR")
    os.environ["LAPMUSIC_CACHE_DIR"] = path
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("LAPMUSIC_CACHE_DIR", None)
        else:
            os.environ["LAPMUSIC_CACHE_DIR"] = old


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def streamlit_app(env: dict, log_path: Path, while_starting=None):
    """A real ``streamlit run app.py`` on a free local port with ``env``; yields its URL once
    ``/_stcore/health`` answers (``while_starting()`` runs meanwhile), and stops it afterwards. A server that
    exits or does not answer within 90 s fails the test with its log."""
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        if while_starting is not None:
            while_starting()
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"streamlit did not start:\n{log_path.read_text(errors='replace')}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
