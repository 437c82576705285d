"""What the server gives a page, measured without a browser: HTTP fetches and Streamlit's websocket protocol.

The classroom benchmark's Chromium pages run on the server's own two cores, so their page-load times include
the browser's work (parsing Streamlit's JavaScript, Plotly, rendering) competing with the server and its
training workers. A student's browser runs on the student's computer. This module measures the server's part
of a page load on its own, with a client that costs almost no CPU:

- :func:`fetch_assets`: the index page and the static files a fresh browser fetches (as a browser does: up to
  6 at a time), with their bytes, the time to get them, and their ``Cache-Control`` / ``ETag`` (whether a
  student's second load re-downloads them).
- :func:`load_page`: Streamlit's own protocol, as the browser speaks it: open ``/_stcore/stream`` (subprotocol
  ``streamlit``), send the ``rerun_script`` BackMsg the browser sends for a fresh page (``streamlit.proto``),
  and time the ForwardMsgs until the sidebar's Train button, the tabs and ``script_finished`` arrive.

A real page load is at least ``fetch_assets`` (first visit; a revalidation of ``index.html`` afterwards) +
``load_page`` + the browser's own CPU time; this measures the first two on the server machine's loopback.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urljoin, urlparse

_ASSET = re.compile(r'<(?:script|link)[^>]*?(?:src|href)="(\./static/[^"]+)"')


def _get(url: str, headers: dict | None = None, timeout: float = 60) -> dict:
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip, deflate, br", **(headers or {})})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
            status, head = response.status, response.headers
    except urllib.error.HTTPError as exc:  # 304 Not Modified arrives as an HTTPError
        body, status, head = exc.read(), exc.code, exc.headers
    return {"url": url, "status": status, "bytes": len(body), "seconds": time.monotonic() - started,
            "encoding": head.get("Content-Encoding"), "cache_control": head.get("Cache-Control"),
            "etag": head.get("ETag"), "body": body}


def asset_urls(base_url: str, index_html: str) -> list[str]:
    """The scripts, module preloads and style sheets ``index.html`` names (what a fresh page fetches first)."""
    return [urljoin(base_url + "/", path) for path in dict.fromkeys(_ASSET.findall(index_html))]


def fetch_assets(base_url: str, extra: list[str] = (), parallel: int = 6) -> dict:
    """Fetch ``index.html``, then its assets and ``extra`` URLs, ``parallel`` at a time.

    Returns seconds (index alone and in all), bytes, how many responses were compressed, and the cache
    headers of the index and of the assets (one value each when they agree).
    """
    started = time.monotonic()
    index = _get(base_url + "/")
    urls = asset_urls(base_url, index["body"].decode("utf-8", "replace")) + [u for u in extra if u]
    urls = list(dict.fromkeys(urls))
    with ThreadPoolExecutor(parallel) as pool:
        assets = list(pool.map(_get, urls))
    return {
        "index_s": round(index["seconds"], 3),
        "total_s": round(time.monotonic() - started, 3),
        "files": 1 + len(assets),
        "bytes": index["bytes"] + sum(a["bytes"] for a in assets),
        "compressed": sum(1 for a in [index, *assets] if a["encoding"]),
        "index_cache_control": index["cache_control"],
        "index_etag": bool(index["etag"]),
        "asset_cache_control": sorted({str(a["cache_control"]) for a in assets}),
        "statuses": sorted({a["status"] for a in [index, *assets]}),
    }


def revalidate_index(base_url: str) -> dict:
    """A warm-cache reload's only HTTP request: ``index.html`` with ``If-None-Match`` (assets are immutable)."""
    first = _get(base_url + "/")
    again = _get(base_url + "/", {"If-None-Match": first["etag"]} if first["etag"] else None)
    return {"status": again["status"], "bytes": again["bytes"], "seconds": round(again["seconds"], 3)}


def load_page(base_url: str, query: str = "", timeout: float = 60) -> dict:
    """A fresh page's script run over Streamlit's websocket, as a browser asks for it, without a browser.

    Returns seconds from opening the socket to: the connection (``connect_s``), the first element
    (``first_delta_s``), the sidebar's Train button (``train_button_s``), the tabs (``tabs_s``) and the end of
    the run (``finished_s``: every element of the first view sent); messages and bytes received; the query
    string the app set (the session link). Synchronous (``websockets.sync``): the benchmark's Playwright
    already runs an event loop in this thread.
    """
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from websockets.sync.client import connect

    host = urlparse(base_url).netloc
    started = time.monotonic()
    out: dict = {"messages": 0, "bytes": 0, "train_button_s": None, "tabs_s": None, "finished_s": None,
                 "first_delta_s": None, "query": None}
    with connect(f"ws://{host}/_stcore/stream", subprotocols=["streamlit"], origin=base_url, max_size=None,
                 open_timeout=timeout) as socket:
        out["connect_s"] = round(time.monotonic() - started, 3)
        rerun = BackMsg()
        rerun.rerun_script.query_string = query
        rerun.rerun_script.page_script_hash = ""
        socket.send(rerun.SerializeToString())
        deadline = started + timeout
        while True:
            data = socket.recv(timeout=max(0.01, deadline - time.monotonic()))
            now = round(time.monotonic() - started, 3)
            msg = ForwardMsg()
            msg.ParseFromString(data)
            out["messages"] += 1
            out["bytes"] += len(data)
            kind = msg.WhichOneof("type")
            if kind == "delta":
                out["first_delta_s"] = out["first_delta_s"] or now
                delta = msg.delta
                if delta.WhichOneof("type") == "new_element" and delta.new_element.WhichOneof("type") == "button":
                    if delta.new_element.button.label == "Train" and out["train_button_s"] is None:
                        out["train_button_s"] = now
                elif delta.WhichOneof("type") == "add_block" and delta.add_block.WhichOneof("type") == "tab_container":
                    out["tabs_s"] = out["tabs_s"] or now
            elif kind == "page_info_changed":
                out["query"] = msg.page_info_changed.query_string
            elif kind == "script_finished":
                if msg.script_finished != ForwardMsg.ScriptFinishedStatus.FINISHED_EARLY_FOR_RERUN:
                    out["finished_s"] = now
                    out["status"] = ForwardMsg.ScriptFinishedStatus.Name(msg.script_finished)
                    break
    return out
