"""The run-folder lock across hosts: two processes given different host names ($LAPMUSIC_HOST) on one folder.

``$LAPMUSIC_LOCK_FLOCK=0`` stands for a shared file system whose locks do not reach the other host, so only
the lease record arbitrates, as it would between two machines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lapmusic.core.lease import encode_record, host_name
from lapmusic.core.lock import RunFolderBusy, lock_owner, run_lock

ROOT = Path(__file__).resolve().parent.parent
LEASE = 1.0
HOLD = ("import sys, time; sys.path.insert(0, sys.argv[1]); from lapmusic.core.lock import run_lock\n"
        "lock = run_lock(sys.argv[2]); lock.acquire(); print('held', flush=True)\n"
        "time.sleep(float(sys.argv[3])); lock.release(); print('released', flush=True)\n")


def holder(run_dir: Path, host: str, seconds: float = 60.0) -> subprocess.Popen:
    env = dict(os.environ, LAPMUSIC_HOST=host, LAPMUSIC_LOCK_FLOCK="0", LAPMUSIC_LEASE_SECONDS=str(LEASE))
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(ROOT), str(run_dir), str(seconds)],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc


def overwrite(run_dir: Path, owner: dict) -> None:
    """Write ``owner`` over the record in place, as a holder's renewal does (one ``pwrite`` of a padded record)."""
    fd = os.open(run_dir / ".lock", os.O_WRONLY | os.O_CREAT)
    try:
        os.pwrite(fd, encode_record(owner), 0)
    finally:
        os.close(fd)


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / ".lock").read_text() or "null")


@pytest.fixture
def host_b(monkeypatch):
    monkeypatch.setenv("LAPMUSIC_HOST", "host-b")
    monkeypatch.setenv("LAPMUSIC_LOCK_FLOCK", "0")
    monkeypatch.setenv("LAPMUSIC_LEASE_SECONDS", str(LEASE))
    assert host_name() == "host-b"


def test_a_live_holder_on_another_host_keeps_the_folder_by_renewing_its_lease(tmp_path, host_b):
    run = tmp_path / "run"
    proc = holder(run, "host-a")
    try:
        first = record(run)["heartbeat"]
        time.sleep(3 * LEASE)  # three leases long: only the renewals keep it
        owner = lock_owner(run)
        assert owner["host"] == "host-a" and owner["pid"] == proc.pid and owner["heartbeat"] > first
        with pytest.raises(RunFolderBusy, match=rf"pid {proc.pid} on host host-a"):
            run_lock(run).acquire()
    finally:
        proc.kill()
        proc.wait()


def test_a_dead_holder_on_another_host_is_taken_over_once_its_lease_expires(tmp_path, host_b, monkeypatch):
    run = tmp_path / "run"
    proc = holder(run, "host-a")
    proc.kill()  # kill -9: nothing released, the record stays
    proc.wait()
    # From host b a pid means nothing: the lease decides, so the folder stays taken until it expires.
    assert lock_owner(run)["pid"] == proc.pid
    with pytest.raises(RunFolderBusy, match="host host-a"):
        run_lock(run).acquire()
    time.sleep(LEASE + 0.3)
    assert lock_owner(run) is None
    with run_lock(run) as lock:
        assert lock.previous["host"] == "host-a" and lock_owner(run)["host"] == "host-b"
    assert lock_owner(run) is None and record(run) is None  # released: emptied


def test_on_the_holders_own_host_a_dead_pid_frees_the_folder_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("LAPMUSIC_HOST", "host-a")
    monkeypatch.setenv("LAPMUSIC_LOCK_FLOCK", "0")
    run = tmp_path / "run"
    proc = holder(run, "host-a")
    proc.kill()
    proc.wait()
    assert record(run)["pid"] == proc.pid and lock_owner(run) is None  # lease still fresh, but pid gone
    with run_lock(run) as lock:
        assert lock.previous["pid"] == proc.pid


def test_a_frozen_holder_loses_its_lease_and_never_writes_over_the_new_owner(tmp_path, host_b):
    run = tmp_path / "run"
    proc = holder(run, "host-a", seconds=4 * LEASE)
    try:
        os.kill(proc.pid, signal.SIGSTOP)  # frozen (a suspended VM, a long pause): no renewals
        time.sleep(LEASE + 0.3)
        lock = run_lock(run)
        lock.acquire()
        mine = record(run)["token"]
        os.kill(proc.pid, signal.SIGCONT)  # it wakes up, renews (finds the record not its own), then releases
        assert proc.stdout.readline().strip() == "released"
        assert proc.wait(timeout=10) == 0
        assert record(run)["token"] == mine and lock_owner(run)["host"] == "host-b"
        lock.release()
    finally:
        proc.kill()
        proc.wait()


def test_a_late_write_of_the_holder_taken_over_is_undone_and_a_stranger_s_is_not(tmp_path, host_b):
    # The frozen holder's one write after its checks (a freeze inside its renewal): the record it writes back is
    # the one we took over, whose lease we saw run out, so our next renewal claims the folder again.
    run = tmp_path / "run"
    run.mkdir()
    stale = {"pid": 4242, "host": "host-a", "since": time.time() - 10, "heartbeat": time.time() - 10,
             "lease": LEASE, "token": "stale"}
    overwrite(run, stale)
    lock = run_lock(run)
    lock.acquire()
    try:
        mine = record(run)["token"]
        overwrite(run, dict(stale, heartbeat=time.time()))  # the late write
        time.sleep(LEASE)  # four renewals
        assert record(run)["token"] == mine and lock_owner(run)["host"] == "host-b"
        stranger = dict(stale, host="host-c", token="another", heartbeat=time.time())
        overwrite(run, stranger)  # a third owner: we must have lost our lease
        time.sleep(LEASE / 2)
        assert record(run)["token"] == "another"
    finally:
        lock.release()
    assert record(run)["token"] == "another"  # not emptied: it is not ours


def test_with_flock_a_fresh_lease_of_another_host_still_refuses(tmp_path, monkeypatch):
    # flock works here, but a record of another host means its flock never reached us: the lease decides.
    monkeypatch.delenv("LAPMUSIC_LOCK_FLOCK", raising=False)
    run = tmp_path / "run"
    run.mkdir()
    other = {"pid": 4242, "host": "elsewhere", "since": time.time(), "heartbeat": time.time(), "lease": LEASE,
             "token": "x"}
    (run / ".lock").write_text(json.dumps(other))
    assert lock_owner(run)["host"] == "elsewhere"
    with pytest.raises(RunFolderBusy, match="pid 4242 on host elsewhere"):
        run_lock(run).acquire()
    other["heartbeat"] = time.time() - 2 * LEASE  # expired
    (run / ".lock").write_text(json.dumps(other))
    assert lock_owner(run) is None
    with run_lock(run) as lock:
        assert lock.previous["host"] == "elsewhere" and lock_owner(run)["host"] == host_name()


def test_a_holder_whose_lease_ran_out_stops_renewing_and_leaves_the_record(tmp_path, host_b, monkeypatch):
    # A freeze between the renewal's read and its write: when the clock says our lease ran out, another host may
    # own the folder by now, so neither the renewal nor the release may write the record again.
    import lapmusic.core.lock as lock_module

    run = tmp_path / "run"
    lock = run_lock(run)
    lock.acquire()
    try:
        mine = record(run)
        real = time.time
        monkeypatch.setattr(lock_module.time, "time", lambda: real() + 5 * LEASE)  # five leases later
        time.sleep(LEASE)  # the renewing thread beats at least twice meanwhile
        assert record(run) == mine  # not rewritten
        assert lock_owner(run) is None or lock_owner(run)["token"] == mine["token"]
    finally:
        lock.release()
    assert record(run) == mine  # the release does not empty a record that may be another host's
