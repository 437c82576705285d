"""A class is never refused by mistake: the per-computer limit counts real clients (loopback and IPv4-mapped
addresses handled, switched off with 0), its refusal names the limit and its setting, and a Train press's
group of runs is queued whole or not at all, also when two sessions of one computer press at once."""

from __future__ import annotations

import threading

import pytest

from lapmusic.core.errors import LapMusicError
from lapmusic.jobs.job import Job
from lapmusic.jobs.limits import Quotas, client_address
from lapmusic.jobs.manager import JobManager


def config(**overrides):
    base = {"dataset": "bach", "hidden": 8, "init": "lae", "epochs": 2, "seed": 0}
    base.update(overrides)
    return base


def pair(seed):
    return [config(seed=seed, init="lae"), config(seed=seed, init="random")]


def idle(tmp_path, per_session=2, per_client=4):
    return JobManager(tmp_path / "runs", max_jobs=1, cuda=False, start=False,
                      quotas=Quotas(per_session=per_session, per_client=per_client))


@pytest.mark.parametrize("raw, counted", [
    ("10.0.0.5", "10.0.0.5"),
    ("::ffff:10.0.0.5", "10.0.0.5"),  # a dual-stack server reports IPv4 browsers this way
    ("::ffff:127.0.0.1", None),  # a browser on the server machine through a dual-stack socket
    ("127.0.0.1", None),
    ("127.1.2.3", None),
    ("::1", None),
    ("fe80::1%eth0", "fe80::1"),
    ("2001:DB8:0:0::1", "2001:db8::1"),
    ("", None),
    (None, None),
    ("not-an-address", "not-an-address"),
])
def test_client_address_normalizes_and_leaves_local_browsers_out(raw, counted):
    assert client_address(raw) == counted


def test_local_browsers_are_not_limited_per_computer(tmp_path):
    manager = idle(tmp_path, per_session=2, per_client=2)
    for n in range(3):  # three local browsers, a pair each: 6 runs, more than the per-computer limit of 2
        manager.submit_group(pair(n), session=f"local-{n}", client="::ffff:127.0.0.1")
    assert manager.queued_count == 6
    assert {job.client for job in manager.jobs()} == {None}


def test_mapped_and_plain_ipv4_count_as_one_computer(tmp_path):
    manager = idle(tmp_path, per_session=2, per_client=2)
    manager.submit_group(pair(1), session="a", client="::ffff:10.0.0.7")
    with pytest.raises(LapMusicError, match=r"this computer \(10\.0\.0\.7\) may have at most 2 new runs"):
        manager.submit(config(seed=9), session="b", client="10.0.0.7")


def test_the_refusal_names_the_limit_and_its_setting(tmp_path):
    manager = idle(tmp_path, per_session=2, per_client=3)
    manager.submit_group(pair(1), session="a", client="10.0.0.5")
    with pytest.raises(LapMusicError) as session_refusal:
        manager.submit(config(seed=2), session="a", client="10.0.0.5")
    text = str(session_refusal.value)
    assert "this browser may have at most 2 new runs" in text and "LAPMUSIC_MAX_JOBS_PER_SESSION" in text
    assert "already have" not in text
    with pytest.raises(LapMusicError) as client_refusal:
        manager.submit_group(pair(3), session="b", client="10.0.0.5")  # 2 + 2 > 3 for this computer
    text = str(client_refusal.value)
    assert "at most 3 new runs" in text and "LAPMUSIC_MAX_JOBS_PER_CLIENT" in text and "0 switches it off" in text
    assert "2 asked for at once" in text


def test_a_per_computer_limit_of_none_lets_a_school_address_through(tmp_path):
    manager = idle(tmp_path, per_session=2, per_client=None)  # LAPMUSIC_MAX_JOBS_PER_CLIENT=0
    for n in range(10):
        manager.submit_group(pair(n), session=f"s{n}", client="192.0.2.1")
    assert manager.queued_count == 20


def test_a_group_that_does_not_fit_queues_nothing(tmp_path):
    manager = idle(tmp_path, per_session=2, per_client=3)
    manager.submit(config(seed=1), session="a", client="10.0.0.5")
    manager.submit(config(seed=2), session="b", client="10.0.0.5")
    with pytest.raises(LapMusicError, match="at most 3 new runs"):
        manager.submit_group(pair(3), session="c", client="10.0.0.5")  # one slot left, two asked for
    assert manager.queued_count == 2 and manager.jobs("c") == []
    assert len(list((tmp_path / "runs").glob("*/config.json"))) == 2
    # Following an existing run is free: a group of one existing and one new run needs one slot.
    jobs = manager.submit_group([config(seed=1), config(seed=4)], session="c", client="10.0.0.5")
    assert jobs[0].creator == "a" and jobs[1].creator == "c" and manager.queued_count == 3


def test_the_same_config_twice_in_a_group_is_one_run(tmp_path):
    manager = idle(tmp_path, per_session=1, per_client=None)
    first, second = manager.submit_group([config(seed=5), config(seed=5)], session="a")
    assert first is second and manager.queued_count == 1


def test_two_sessions_of_one_computer_pressing_at_once_each_get_all_or_nothing(tmp_path):
    for attempt in range(5):
        manager = idle(tmp_path / str(attempt), per_session=2, per_client=3)
        barrier, outcome = threading.Barrier(2), {}

        def press(name, seed):
            barrier.wait()
            try:
                outcome[name] = len(manager.submit_group(pair(seed), session=name, client="10.0.0.9"))
            except LapMusicError:
                outcome[name] = 0

        threads = [threading.Thread(target=press, args=(f"s{n}", n)) for n in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcome.values()) == [0, 2]  # one whole pair, never two halves
        assert manager.queued_count == 2
        refused = next(name for name, got in outcome.items() if got == 0)
        assert manager.jobs(refused) == [] and manager.slots_left(refused, "10.0.0.9") == 1


def test_a_folder_that_cannot_be_written_undoes_the_group(tmp_path, monkeypatch):
    manager = idle(tmp_path, per_session=2, per_client=None)
    real, calls = Job.create.__func__, []

    def flaky(cls, run_dir, *args, **kwargs):
        calls.append(run_dir)
        if len(calls) == 2:
            raise LapMusicError("disk full")
        return real(cls, run_dir, *args, **kwargs)

    monkeypatch.setattr(Job, "create", classmethod(flaky))
    with pytest.raises(LapMusicError, match="disk full"):
        manager.submit_group(pair(1), session="a")
    assert manager.queued_count == 0 and manager.jobs("a") == []
    assert not calls[0].exists()  # the first run's folder was removed, not left as an orphan
    monkeypatch.undo()
    assert len(manager.submit_group(pair(1), session="a")) == 2  # and the quota was not spent
