"""The Streamlit server process: its setup (pandas imported whole, no full gc after every script run) and
the fairness of live pages (the refresh budget, refreshes in arrival order)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

RACE = """
import sys, threading
import lapmusic.ui.server  # what app.py imports first in every session's script thread
from lapmusic.plots import loss_figure

history = {"LAE": [{"epoch": 0, "train_nll": 11.0, "valid_nll": 11.0, "valid_acc": 0.0}]}
other = threading.Thread(target=lambda: __import__("pandas"))  # another session's lazy import
other.start()
failures = []
while other.is_alive():
    try:
        loss_figure(history).to_dict()
    except AttributeError as exc:
        failures.append(str(exc))
other.join()
print(len(failures), failures[:1])
"""


def test_a_chart_drawn_while_another_session_imports_pandas_does_not_fail():
    # Plotly looks pandas up in sys.modules without importing it: unless lapmusic.ui.server imports pandas
    # whole first, a chart drawn while another thread is importing it fails.
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", RACE], cwd=repo, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(repo)})
    assert out.returncode == 0, out.stderr
    # The last line: a library may print on import (pyfluidsynth does when CI is set).
    assert out.stdout.strip().splitlines()[-1].split()[0] == "0", out.stdout


def test_the_refresh_interval_grows_with_the_pages_that_refresh_so_their_cpu_stays_within_the_budget():
    """The interval is max(base, pages x cpu per refresh / share), pages counted over the last minute."""
    from lapmusic.ui.fairness import POLL_FORGET_SECONDS, PollBudget

    budget = PollBudget(share=0.25, first_cpu=0.04)
    assert budget.seconds("a", 1.5, now=0.0) == 1.5  # one page: the base
    for n in range(30):
        interval = budget.seconds(f"page{n}", 1.5, now=1.0)
    assert interval == pytest.approx(max(1.5, 31 * 0.04 / 0.25))  # 4.96 s for 31 pages
    assert budget.seconds("a", 1.5, now=2.0) == pytest.approx(interval)  # the same page counts once
    # Pages that stopped refreshing a minute ago no longer count.
    assert budget.seconds("a", 1.5, now=1.0 + POLL_FORGET_SECONDS + 1) == 1.5
    # The cost per refresh is measured: a moving average moves towards what the refreshes take.
    for _ in range(100):
        budget.record("a", 0.002, now=100.0)
    assert budget.cpu == pytest.approx(0.002, rel=1e-3)
    for n in range(30):
        interval = budget.seconds(f"page{n}", 1.5, now=100.0)
    assert interval == 1.5  # cheap refreshes: thirty pages keep the base interval


def test_pages_that_only_refresh_their_fragment_keep_counting_in_the_refresh_budget():
    """A live Training tab calls ``seconds`` once, when it is drawn, then only refreshes its fragment
    (``record``): thirty such pages must still count after a minute, or the interval falls back to the base
    and the refreshes overload the server again."""
    from lapmusic.ui.fairness import POLL_FORGET_SECONDS, PollBudget

    budget = PollBudget(share=0.25, first_cpu=0.04)
    for n in range(30):
        budget.seconds(f"page{n}", 1.5, now=0.0)  # each page draws its live view once
    for t in range(1, 4):  # then the pages only refresh, for three minutes
        for n in range(30):
            budget.record(f"page{n}", 0.04, now=t * POLL_FORGET_SECONDS * 0.9)
    later = 3 * POLL_FORGET_SECONDS * 0.9 + 1
    assert budget.seconds("late", 1.5, now=later) == pytest.approx(31 * 0.04 / 0.25)


def _until(condition, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


def _gate_run(slots: int, count: int) -> tuple[list[int], int]:
    """``count`` threads arrive at a FairGate one after the other and stay inside until released together;
    returns the order they got in and the most that were inside at once."""
    from lapmusic.ui.fairness import FairGate

    gate, lock, release = FairGate(slots=slots), threading.Lock(), threading.Event()
    entered, inside, most = [], [0], [0]

    def refresh(n: int) -> None:
        with gate:
            with lock:
                entered.append(n)
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            release.wait(5)
            with lock:
                inside[0] -= 1

    threads = []
    for n in range(count):  # each takes its ticket before the next thread starts
        threads.append(threading.Thread(target=refresh, args=(n,)))
        threads[-1].start()
        _until(lambda: gate.arrived == n + 1, f"refresh {n} to arrive")
    _until(lambda: len(entered) >= slots, f"the first {slots} refreshes to get in")
    with lock:
        assert entered == list(range(slots))  # the first ones are in, the others wait
    release.set()
    for thread in threads:
        thread.join(5)
    return entered, most[0]


def test_page_refreshes_take_turns_in_arrival_order():
    """The gate lets refreshes in first come, first served, at most ``slots`` at once."""
    entered, most = _gate_run(slots=1, count=8)
    assert entered == list(range(8)) and most == 1  # one at a time: exactly the arrival order
    entered, most = _gate_run(slots=2, count=8)
    assert sorted(entered) == list(range(8)) and most == 2


def test_the_server_does_not_collect_all_garbage_after_every_script_run():
    """Streamlit's ``gc.collect(2)`` after each script run (fragment refreshes included) is off, in the
    server's options and in .streamlit/config.toml."""
    import tomllib
    from streamlit import config

    import lapmusic.ui.server  # noqa: F401 - sets the option on import

    assert config.get_option("runner.postScriptGC") is False
    toml = tomllib.loads((Path(__file__).resolve().parents[1] / ".streamlit" / "config.toml").read_text())
    assert toml["runner"]["postScriptGC"] is False
