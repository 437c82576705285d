"""A browser that falls behind is disconnected for real (lapmusic/ui/slowclients.py), not left frozen.

Streamlit's Starlette server drops a session whose browser is 500 messages behind but leaves its websocket
open, so the page never updates again and never reconnects.
With :func:`lapmusic.ui.slowclients.install` the server closes that websocket, which makes the browser
reconnect and rerun the app.
"""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("streamlit.web.server.starlette.starlette_websocket")  # the Starlette server of newer Streamlits


class StuckWebSocket:
    """A browser that reads nothing: every send waits for ever (TCP back-pressure)."""

    def __init__(self):
        self.headers, self.cookies, self.client = {}, {}, None
        self.closed = asyncio.Event()
        self.code = None

    async def send_bytes(self, data: bytes) -> None:
        await asyncio.Event().wait()

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.code = code
        self.closed.set()


class ReadingWebSocket(StuckWebSocket):
    """A browser that keeps up."""

    def __init__(self):
        super().__init__()
        self.received = 0

    async def send_bytes(self, data: bytes) -> None:
        self.received += 1


def _message():
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    msg = ForwardMsg()
    msg.delta.new_element.markdown.body = "epoch 3 of 30"
    return msg


def test_a_browser_that_falls_500_messages_behind_gets_its_websocket_closed_so_that_it_reconnects():
    from streamlit.runtime.session_manager import SessionClientDisconnectedError
    from streamlit.web.server.starlette.starlette_websocket import StarletteSessionClient

    from lapmusic.ui import slowclients

    assert slowclients.install() and slowclients.install()  # idempotent: one wrapper, not two

    async def scenario():
        socket = StuckWebSocket()
        client = StarletteSessionClient(socket)
        written = 0
        with pytest.raises(SessionClientDisconnectedError, match="^$"):  # Streamlit raises it without a message
            for _ in range(10_000):
                client.write_forward_msg(_message())
                written += 1
        # Without the patch the server stops here: the session is dropped and the websocket stays open.
        await asyncio.wait_for(socket.closed.wait(), timeout=5)
        return written, socket.code

    written, code = asyncio.run(scenario())
    assert 400 <= written <= 600  # the server's queue (500) filled up first
    assert code == slowclients.CLOSE_CODE


def test_a_browser_that_keeps_up_is_never_hung_up():
    from streamlit.web.server.starlette.starlette_websocket import StarletteSessionClient

    from lapmusic.ui import slowclients

    slowclients.install()

    async def scenario():
        socket = ReadingWebSocket()
        client = StarletteSessionClient(socket)
        for _ in range(2000):
            client.write_forward_msg(_message())
            await asyncio.sleep(0)  # the sender task drains the queue as a browser reading at once would
        await asyncio.sleep(0.05)
        await client.aclose()
        return socket

    socket = asyncio.run(scenario())
    assert socket.received == 2000
    assert socket.code is None
