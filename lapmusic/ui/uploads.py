"""Streamlit's upload endpoint bounded before a byte is held, and uploads released once they are not needed.

:func:`install` (called once per server process by :mod:`lapmusic.ui.server`) puts an :class:`UploadGate`
in front of ``PUT /_stcore/upload_file/{session}/{file}``: a request is refused (HTTP 413, 429 or 503 with a
one-line reason, the connection closed) before its body is read when its ``Content-Length`` would take its
session, its client address or the server over :class:`~lapmusic.ui.uploadgate.EndpointLimits`, and as soon
as its body passes them when it sends no ``Content-Length``. The patch is on Starlette's ``Route.handle``
(the server's routes exist before the app's first script run), and only the upload route is touched.

Uploads are released when a dataset is built from them (:func:`release_files`), and within
``SWEEP_SECONDS`` of their page disconnecting (Streamlit itself would keep them for
``server.disconnectedSessionTTL``, two minutes, and longer while that session's script runs).

Streamlit's XSRF check on this endpoint compares the ``_streamlit_xsrf`` cookie with the ``X-Xsrftoken``
header: it stops another web site from making a student's browser upload, but a scripted client sets both
itself, so it limits nothing; the gate does.
"""

from __future__ import annotations

import logging
import threading
import time

from lapmusic.core.errors import LapMusicError

from .uploadgate import EndpointLimits, UploadGate, UploadRefused

log = logging.getLogger(__name__)

ROUTE_SUFFIX = "_stcore/upload_file/{session_id}/{file_id}"
SWEEP_SECONDS = 10.0
_MARK = "_lapmusic_upload_gate"
_gate: UploadGate | None = None
_gate_guard = threading.Lock()


def _upload_manager():
    """The server's MemoryUploadedFileManager, or None outside a running server (AppTest, scripts)."""
    from streamlit.runtime import Runtime

    if not Runtime.exists():
        return None
    manager = Runtime.instance().uploaded_file_mgr
    return manager if isinstance(getattr(manager, "file_storage", None), dict) else None


def stored_uploads() -> dict[str, tuple[int, int]]:
    """``{Streamlit session id: (files, bytes)}`` the server holds now ({} outside a running server)."""
    manager = _upload_manager()
    if manager is None:
        return {}
    with manager._lock:  # Streamlit's own lock of its storage: add_file may run on another thread
        return {sid: (len(files), sum(len(f.data) for f in files.values()))
                for sid, files in manager.file_storage.items()}


def gate() -> UploadGate:
    """The process's gate (made on first use, its limits read from the environment then)."""
    global _gate
    with _gate_guard:
        if _gate is None:
            try:
                limits = EndpointLimits.from_env()
            except LapMusicError as exc:  # a bad LAPMUSIC_MAX_* value: keep the server up with the defaults
                log.error("%s; the upload endpoint uses the default limits", exc)
                limits = EndpointLimits()
            _gate = UploadGate(limits, stored_uploads)
            threading.Thread(target=_sweep, name="lapmusic-upload-sweeper", daemon=True).start()
        return _gate


def release_files(streamlit_session: str, file_ids) -> None:
    """Drop these files of a Streamlit session (a dataset was built from them); its other uploads (a primer
    on the Samples tab) stay."""
    manager = _upload_manager()
    if manager is not None:
        for file_id in file_ids:
            manager.remove_file(streamlit_session, file_id)


def release_session_files(streamlit_session: str) -> None:
    """Drop every file a Streamlit session uploaded (its page is gone)."""
    manager = _upload_manager()
    if manager is not None:
        manager.remove_session_files(streamlit_session)
    if _gate is not None:
        _gate.forget([streamlit_session])


def release_disconnected() -> list[str]:
    """Drop the uploads of sessions whose page is gone; returns their Streamlit session ids."""
    from streamlit.runtime import Runtime

    if not Runtime.exists():
        return []
    runtime = Runtime.instance()
    gone = [sid for sid in stored_uploads() if not runtime.is_active_session(sid)]
    for sid in gone:
        release_session_files(sid)
    return gone


def _sweep() -> None:
    while True:
        time.sleep(SWEEP_SECONDS)
        try:
            if gone := release_disconnected():
                log.info("released the uploads of %d disconnected page(s)", len(gone))
        except Exception:  # noqa: BLE001 - the sweeper must outlive a Streamlit hiccup
            log.exception("could not release the uploads of disconnected pages")


def install() -> bool:
    """Guard the upload route of every Starlette app of this process (once); False without Starlette."""
    try:
        from starlette.routing import Route
    except ImportError:
        return False
    original = Route.handle
    if getattr(original, _MARK, False):
        return True

    async def handle(self, scope, receive, send):
        if scope.get("type") == "http" and scope.get("method") == "PUT" and self.path.endswith(ROUTE_SUFFIX):
            return await _guarded(original, self, scope, receive, send)
        return await original(self, scope, receive, send)

    setattr(handle, _MARK, True)
    handle.__doc__ = original.__doc__
    Route.handle = handle
    return True


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers") or ():
        if name.lower() == b"content-length":
            try:
                return max(0, int(value))
            except ValueError:
                return None  # Streamlit answers 400 before reading a body
    return None


async def _refuse(send, refusal: UploadRefused) -> None:
    body = (str(refusal) + "\n").encode("utf-8")
    await send({"type": "http.response.start", "status": refusal.status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


async def _guarded(original, route, scope, receive, send):
    from starlette.exceptions import HTTPException

    session = str((scope.get("path_params") or {}).get("session_id", ""))
    client = (scope.get("client") or ("?",))[0]
    the_gate = gate()
    try:
        ticket = the_gate.admit(session, client, _content_length(scope))
    except UploadRefused as refusal:
        log.warning("upload refused before its body (%s, session %s): %s", client, session[:8], refusal)
        return await _refuse(send, refusal)

    async def counted():
        message = await receive()
        if message.get("type") == "http.request":
            try:
                the_gate.receive(ticket, len(message.get("body", b"")))
            except UploadRefused as refusal:
                log.warning("upload refused while streaming (%s, session %s): %s", client, session[:8], refusal)
                raise HTTPException(status_code=refusal.status, detail=str(refusal)) from None
        return message

    try:
        return await original(route, scope, counted, send)
    finally:
        the_gate.settle(ticket)
