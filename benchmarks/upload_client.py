"""A scripted client of Streamlit's upload endpoint, as a hostile one would write it (no browser).

:func:`open_session` connects a page over the websocket (so that its Streamlit session is active) and
returns its session id; :func:`put_file` sends one file to ``/_stcore/upload_file/{session}/{file}`` with a
self-made XSRF cookie and header (Streamlit compares the two; the client chooses both) over a raw socket, so
that a refusal answered before the body is sent is seen as such: it returns the status, the reason and the
seconds from the first byte sent to the status line, and how many body bytes went out before the answer.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
import uuid
from urllib.parse import urlparse


def xsrf_token() -> str:
    from streamlit.web.server.starlette.starlette_app_utils import generate_xsrf_token_string

    return generate_xsrf_token_string(os.urandom(16))


@contextlib.contextmanager
def open_session(base_url: str, timeout: float = 60):
    """A connected page: yields its Streamlit session id (once its first script run is over) while the
    websocket stays open."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from websockets.sync.client import connect

    host = urlparse(base_url).netloc
    with connect(f"ws://{host}/_stcore/stream", subprotocols=["streamlit"], origin=base_url, max_size=None,
                 open_timeout=timeout) as ws:
        rerun = BackMsg()
        rerun.rerun_script.query_string = ""
        rerun.rerun_script.page_script_hash = ""
        ws.send(rerun.SerializeToString())
        deadline = time.monotonic() + timeout
        session, finished = None, False
        while not finished:  # the first script run imports lapmusic.ui.server, which guards the endpoint
            msg = ForwardMsg()
            msg.ParseFromString(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            kind = msg.WhichOneof("type")
            if kind == "new_session":
                session = msg.new_session.initialize.session_id
            finished = kind == "script_finished" and msg.script_finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN
        yield session


def put_file(base_url: str, session: str, size: int, *, content_length: bool = True, name: str = "a.mid",
             timeout: float = 60) -> dict:
    """PUT one file of ``size`` bytes; ``content_length=False`` sends it chunked (no length announced).

    Returns ``{"status", "reason", "answer_s", "body_sent"}`` (status 0 when the server closed without an
    answer).
    """
    parsed = urlparse(base_url)
    token, boundary = xsrf_token(), uuid.uuid4().hex
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: audio/midi\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    total = len(head) + size + len(tail)
    lines = [f"PUT /_stcore/upload_file/{session}/{uuid.uuid4()} HTTP/1.1", f"Host: {parsed.netloc}",
             f"Content-Type: multipart/form-data; boundary={boundary}", f"X-Xsrftoken: {token}",
             f"Cookie: _streamlit_xsrf={token}", "Connection: close"]
    lines.append(f"Content-Length: {total}" if content_length else "Transfer-Encoding: chunked")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    chunk = b"\0" * (256 * 1024)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout) as sock:
        started = time.monotonic()
        sock.sendall(request)
        sent, answer = 0, b""
        pieces = [head] + [chunk[: min(len(chunk), size - i)] for i in range(0, size, len(chunk))] + [tail]
        try:
            for piece in pieces:
                if select.select([sock], [], [], 0)[0]:
                    break  # the server answered before the body was sent
                sock.sendall(piece if content_length else b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
            else:
                if not content_length:
                    sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-body: the answer is already on its way
        try:
            while b"\r\n\r\n" not in answer:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
            answered = time.monotonic() - started
            with contextlib.suppress(OSError):
                sock.settimeout(2)
                while data := sock.recv(65536):
                    answer += data
        except (ConnectionResetError, socket.timeout):
            answered = time.monotonic() - started
    status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    status = int(status_line.split()[1]) if status_line.startswith("HTTP/") else 0
    body = answer.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in answer else b""
    return {"status": status, "reason": body.decode("utf-8", "replace").strip()[:300], "answer_s": answered,
            "body_sent": sent}
