"""The error guard every page body runs in: a user sees a readable message, never a traceback.

Errors a user can cause (:class:`~lapmusic.core.errors.LapMusicError`) are shown as their message; anything
else as a short apology with the exception's one-line summary, the traceback going to the server log.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import streamlit as st

from lapmusic.core.errors import LapMusicError

log = logging.getLogger(__name__)


def guarded(render: Callable[..., Any], *args, **kwargs) -> Any:
    """Run a page body; turn any error into a readable message instead of a traceback.

    Returns
    -------
    Any
        What ``render`` returned, or None when it raised (the page then shows the message).
    """
    try:
        return render(*args, **kwargs)
    except LapMusicError as exc:
        st.error(str(exc))
    except Exception as exc:  # noqa: BLE001 - the app must stay usable whatever a page does
        log.exception("page %s failed", getattr(render, "__qualname__", render))
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        st.error(
            f"Something went wrong here ({type(exc).__name__}{': ' + message if message else ''}). "
            "The rest of the app still works; the details are in the server log."
        )
    return None
