"""A page whose browser falls far behind is disconnected for real, so that it reconnects and catches up.

Streamlit's server (1.5x with its Starlette server) queues at most ``WEBSOCKET_MAX_SEND_QUEUE_SIZE`` (500)
messages per browser. When a browser does not read them fast enough (its machine is busy, its network slow),
the 501st message makes the server drop the session (``Runtime.disconnect_session``), but it leaves the
websocket open: the browser is never told, keeps sending its reruns (discarded), never reconnects, and shows
the state of a minute ago for ever, with no error. A live Training tab sends tens of messages a refresh, so a
browser that reads nothing for a while (a busy or sleeping laptop, a bad network) reaches the limit.

:func:`install` makes the server close such a websocket (code 1013, "try again later"): the browser's own
reconnect logic then reconnects at once and reruns the app, which restores the student's session from its
link (``?session=``) and shows the current runs. Queued messages of the dropped session are discarded (they
describe a past state). Nothing changes for a browser that keeps up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger(__name__)

CLOSE_CODE = 1013  # RFC 6455 "Try Again Later": the browser reconnects
_MARK = "_lapmusic_hangs_up"


def install() -> bool:
    """Patch Streamlit's websocket client once per process; False where this Streamlit has no such client."""
    try:
        from streamlit.runtime.session_manager import SessionClientDisconnectedError
        from streamlit.web.server.starlette.starlette_websocket import StarletteSessionClient
    except ImportError:  # an older Streamlit (Tornado server): it buffers without dropping sessions
        return False
    original = StarletteSessionClient.write_forward_msg
    if getattr(original, _MARK, False):
        return True

    def write_forward_msg(self, msg) -> None:
        try:
            original(self, msg)
        except SessionClientDisconnectedError:
            try:
                hang_up(self)
            except Exception:  # Streamlit's private fields moved: keep the error the runtime handles
                log.exception("could not close the websocket of a dropped session")
            raise

    setattr(write_forward_msg, _MARK, True)
    write_forward_msg.__doc__ = original.__doc__
    StarletteSessionClient.write_forward_msg = write_forward_msg
    return True


def hang_up(client) -> None:
    """Close ``client``'s websocket (once): stop its sender, discard what it had queued, send a close frame.

    Called on the server's event loop (where the runtime writes messages) or from another thread; the close
    runs as a task of the loop that owns the client's sender task.
    """
    if client.__dict__.get(_MARK):
        return
    client.__dict__[_MARK] = True
    sender = client._sender_task
    if sender.done():
        return  # the websocket is already gone: the browser reconnects by itself
    log.warning("a browser fell %s+ messages behind: closing its websocket so that it reconnects",
                client._send_queue.maxsize)

    async def close() -> None:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
        with contextlib.suppress(Exception):  # already closing: nothing to do
            await client._websocket.close(code=CLOSE_CODE, reason="too far behind; reconnect")

    loop = sender.get_loop()
    loop.call_soon_threadsafe(lambda: loop.create_task(close()))
