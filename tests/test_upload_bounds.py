"""Streamlit's upload endpoint holds at most what lapmusic allows, whatever the client sends.

The gate's arithmetic against hand-made cases (lapmusic/ui/uploadgate.py), then a real server on 127.0.0.1
flooded by a scripted client that sets its own XSRF cookie and header (benchmarks/upload_client.py).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from conftest import streamlit_app

from lapmusic.core.errors import DataError
from lapmusic.ui.uploadgate import FRAMING_BYTES, EndpointLimits, UploadGate, UploadRefused

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

MB = 1024 * 1024
LIMITS = EndpointLimits(file_bytes=8 * MB, session_files=3, session_bytes=16 * MB, client_bytes=24 * MB,
                        server_bytes=40 * MB, client_per_minute=100)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def claim(size: int) -> int:
    """The Content-Length of a request carrying a file of ``size`` bytes (its framing included)."""
    return size + FRAMING_BYTES


def test_a_session_gets_one_dataset_worth_and_no_more():
    stored: dict = {}
    gate = UploadGate(LIMITS, lambda: stored)
    first = gate.admit("s1", "10.0.0.1", claim(6 * MB))
    second = gate.admit("s1", "10.0.0.1", claim(6 * MB))  # both on their way at once: 12 MB reserved
    with pytest.raises(UploadRefused, match=r"^too much data in this session: at most 16 MB") as refused:
        gate.admit("s1", "10.0.0.1", claim(5 * MB))
    assert refused.value.status == 413
    gate.settle(first)
    gate.settle(second)
    stored["s1"] = (2, 12 * MB)  # now held by the upload manager
    gate.admit("s1", "10.0.0.1", claim(4 * MB))  # exactly 16 MB
    with pytest.raises(UploadRefused, match=r"^too many files in this session: at most 3"):
        gate.admit("s1", "10.0.0.1", claim(1))


def test_a_file_over_the_per_file_limit_is_refused_before_its_body():
    gate = UploadGate(LIMITS, dict)
    with pytest.raises(UploadRefused, match=r"^a file is larger than 8 MB \(LAPMUSIC_MAX_MIDI_BYTES\)"):
        gate.admit("s1", "10.0.0.1", claim(8 * MB + 1))
    gate.admit("s1", "10.0.0.1", claim(8 * MB))


def test_a_body_without_content_length_is_counted_as_it_arrives():
    gate = UploadGate(LIMITS, dict)
    ticket = gate.admit("s1", "10.0.0.1", None)
    for _ in range(8):
        gate.receive(ticket, MB)
    gate.receive(ticket, FRAMING_BYTES)  # the framing is allowed on top
    with pytest.raises(UploadRefused, match="larger than 8 MB"):
        gate.receive(ticket, 1)
    # A lying Content-Length: the bytes past it count too.
    liar = gate.admit("s2", "10.0.0.1", claim(1000))
    gate.receive(liar, claim(1000))
    with pytest.raises(UploadRefused, match="larger than 8 MB"):
        gate.receive(liar, 9 * MB)


def test_many_sessions_of_one_client_share_its_bound_and_everybody_shares_the_servers():
    stored: dict = {}
    gate = UploadGate(LIMITS, lambda: stored)
    for n in range(3):  # three pages of one client, 8 MB each
        gate.settle(gate.admit(f"a{n}", "10.0.0.1", claim(8 * MB)))
        stored[f"a{n}"] = (1, 8 * MB)
    with pytest.raises(UploadRefused, match=r"^too much data uploaded from your address: at most 24 MB"):
        gate.admit("a3", "10.0.0.1", claim(1))
    gate.settle(gate.admit("b0", "10.0.0.2", claim(8 * MB)))
    stored["b0"] = (1, 8 * MB)
    gate.admit("b1", "10.0.0.2", claim(8 * MB))  # 40 MB: the server's bound
    with pytest.raises(UploadRefused, match=r"^the server holds 40 MB of uploads already") as refused:
        gate.admit("c0", "10.0.0.3", claim(1))
    assert refused.value.status == 503
    del stored["a0"]  # a page closed: its files were released
    gate.admit("c0", "10.0.0.3", claim(1))


def test_a_client_starting_too_many_uploads_a_minute_waits():
    clock = Clock()
    gate = UploadGate(EndpointLimits(client_per_minute=3), dict, clock=clock)
    for _ in range(3):
        gate.settle(gate.admit("s", "10.0.0.1", claim(10)))
    with pytest.raises(UploadRefused, match=r"^too many uploads from your address: 3 a minute") as refused:
        gate.admit("s", "10.0.0.1", claim(10))
    assert refused.value.status == 429
    gate.admit("s", "10.0.0.2", claim(10))  # another address is not slowed down
    clock.now = 61.0
    gate.admit("s", "10.0.0.1", claim(10))


def test_the_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("LAPMUSIC_MAX_UPLOAD_CLIENT_BYTES", "1e6")
    monkeypatch.setenv("LAPMUSIC_MAX_UPLOAD_FILES", "7")
    limits = EndpointLimits.from_env()
    assert limits.client_bytes == 1_000_000 and limits.session_files == 7
    monkeypatch.setenv("LAPMUSIC_MAX_UPLOAD_SERVER_BYTES", "lots")
    with pytest.raises(DataError, match="LAPMUSIC_MAX_UPLOAD_SERVER_BYTES"):
        EndpointLimits.from_env()


# ------------------------------------------------------------------------------ a real server
def test_a_flood_from_one_session_is_refused_before_its_bodies_and_the_files_are_released(tmp_path):
    pytest.importorskip("websockets")
    from upload_client import open_session, put_file

    env = {**os.environ, "LAPMUSIC_CACHE_DIR": str(tmp_path / "cache"), "LAPMUSIC_RUNS_DIR": str(tmp_path / "runs"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "LAPMUSIC_MAX_UPLOAD_CLIENT_BYTES": str(20 * MB)}
    with streamlit_app(env, tmp_path / "server.log") as url:
        with open_session(url) as session:
            answers = [put_file(url, session, 3 * MB) for _ in range(8)]  # 24 MB, over the 16 MB a session holds
            statuses = [a["status"] for a in answers]
            assert statuses == [204] * 5 + [413] * 3, answers
            assert all("too much data in this session: at most 16 MB" in a["reason"] for a in answers[5:])
            big = put_file(url, session, 9 * MB)
            assert big["status"] == 413 and big["reason"].startswith("a file is larger than 8 MB")
            chunked = put_file(url, session, 2 * MB, content_length=False)  # no length announced
            assert chunked["status"] == 413 and "too much data in this session" in chunked["reason"]
            # The XSRF check compares a cookie with a header the client sets itself: it is no bound. Another
            # page of the same client gets what is left of the client's 20 MB.
            with open_session(url) as other:
                assert put_file(url, other, 1000)["status"] == 204
                refused = put_file(url, other, 6 * MB)
                assert refused["status"] == 413 and "from your address: at most 20 MB" in refused["reason"]
        # The first page is gone: its 15 MB are released within the sweeper's period, not Streamlit's minutes.
        deadline = time.monotonic() + 60
        with open_session(url) as third:
            while (answer := put_file(url, third, 5 * MB))["status"] != 204:
                assert "from your address" in answer["reason"] and time.monotonic() < deadline, answer
                time.sleep(1.0)
        log = (tmp_path / "server.log").read_text(errors="replace")
        assert "upload refused before its body" in log and "upload refused while streaming" in log


def test_a_built_dataset_releases_its_files_and_keeps_the_sessions_other_uploads(monkeypatch):
    from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
    from streamlit.runtime.uploaded_file_manager import UploadedFileRec

    from lapmusic.ui import uploads

    manager = MemoryUploadedFileManager("/_stcore/upload_file")
    for file_id in ("song-1", "song-2", "primer"):
        manager.add_file("s1", UploadedFileRec(file_id, f"{file_id}.mid", "audio/midi", b"x" * 100))
    manager.add_file("s2", UploadedFileRec("other", "other.mid", "audio/midi", b"y" * 10))
    monkeypatch.setattr(uploads, "_upload_manager", lambda: manager)
    assert uploads.stored_uploads() == {"s1": (3, 300), "s2": (1, 10)}
    uploads.release_files("s1", ["song-1", "song-2"])  # what build_upload does once the dataset is saved
    assert uploads.stored_uploads() == {"s1": (1, 100), "s2": (1, 10)}  # the Samples tab's primer stays
    uploads.release_session_files("s2")  # a page gone
    assert uploads.stored_uploads() == {"s1": (1, 100)}
