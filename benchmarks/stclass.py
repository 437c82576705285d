"""Classroom students without browsers: each one speaks Streamlit's websocket protocol as its browser would.

The classroom benchmark's headless Chromium pages run on the server's own cores, where thirty of them can
cost more CPU than the server and its workers, so that benchmark measures the students' browsers as much as
the server. A :class:`Student` here costs almost no CPU and sends the server
exactly what a browser sends (Streamlit 1.67's frontend, ``static/js/index.*.js``, read for this):

- a page load: open ``/_stcore/stream`` (subprotocol ``streamlit``) and send a ``rerun_script`` BackMsg
  (``ClientState``: the query string, the page's script hash, no widget states on a fresh page); the app
  answers with ``page_info_changed`` when it sets the URL (``?session=...&token=...``), which the browser
  keeps and sends with every later rerun, as this client does;
- a button click: ``rerun_script`` whose ``widget_states`` hold the button's id (read from the ``button``
  element of the received deltas) with ``trigger_value`` true; other widgets keep their values on the
  server (``SessionState._compact_state``), so only the values a student changed are sent;
- a fragment with ``run_every``: the server sends ``auto_rerun`` (fragment id, interval) and the browser
  then sends ``rerun_script`` with that ``fragment_id`` and ``is_auto_rerun`` every interval
  (``setInterval``, whether or not the previous one was answered), replaces the timer when the interval
  changes, and clears every timer when a full run starts (``new_session`` without fragment ids) or on
  ``stop_auto_rerun``;
- a websocket the server closes: the browser reconnects and asks for a run of the app.

Recorded per student (seconds, ``time.monotonic``): the page load (to the sidebar's Train button, to the
tabs, to the end of the first run), the click, the first loss curve after it (the Training tab's
``plotly_chart`` with key ``loss_chart``: drawn only once a run has an epoch), the first queue position with
its estimate, and the websocket traffic (messages sent and received, the last one received, reconnects).
What it does not do: render, run Plotly, grey elements out. Many students share one event loop.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlparse

LOSS_CHART_KEY = "loss_chart"  # lapmusic/ui/pages/training.py
QUEUE_TEXT = "starts in about"  # the Training tab's queue line: "position N of M ... starts in about ..."


def _element_text(element) -> str:
    kind = element.WhichOneof("type")
    if kind == "alert":
        return element.alert.body
    if kind == "markdown":
        return element.markdown.body
    if kind == "progress":
        return element.progress.text
    return ""


class Student:
    """One browser tab on the app: load, optionally set widgets and click a button, follow the live views.

    ``await student.run(stop)`` keeps the page open (answering the server's auto-reruns) until ``stop`` is
    set; :meth:`click` may be awaited from another task once ``loaded`` is set.
    """

    def __init__(self, base_url: str, query: str = "", name: str = "", assets: list[str] | None = None):
        self.base_url, self.query, self.name = base_url, query, name
        self.assets = assets  # static files to fetch first, as a fresh browser does (None: none)
        self.ws_url = f"ws://{urlparse(base_url).netloc}/_stcore/stream"
        self.page_script_hash = ""
        self.buttons: dict[str, str] = {}  # label -> widget id
        self.numbers: dict[str, str] = {}  # number_input label -> widget id
        self.timers: dict[str, tuple[float, asyncio.Task]] = {}  # fragment id -> (interval, task)
        self.loaded = asyncio.Event()
        self.started = self.assets_at = self.train_button_at = self.tabs_at = self.loaded_at = None
        self.clicked_at = self.first_curve_at = self.queue_at = None
        self.sent = self.auto_sent = self.received = self.bytes = self.reconnects = 0
        self.last_received: float | None = None
        self.received_at: list[float] = []  # when each message arrived (for the longest silence)
        self.errors: list[str] = []
        self.texts: list[str] = []  # the last texts the page showed (for a page without a curve)
        self._socket = None

    # ------------------------------------------------------------------ what the browser sends
    async def _send_rerun(self, widgets: list | None = None, fragment_id: str = "") -> None:
        from streamlit.proto.BackMsg_pb2 import BackMsg

        msg = BackMsg()
        state = msg.rerun_script
        state.query_string = self.query
        state.page_script_hash = self.page_script_hash
        if fragment_id:
            state.fragment_id, state.is_auto_rerun = fragment_id, True
        for widget in widgets or []:
            state.widget_states.widgets.append(widget)
        state.context_info.timezone, state.context_info.locale = "UTC", "en-US"
        state.context_info.url = self.base_url + ("/?" + self.query if self.query else "/")
        socket = self._socket
        if socket is None:
            return  # reconnecting: the browser drops what it cannot send (it reruns on reconnect)
        try:
            await socket.send(msg.SerializeToString())
            self.sent += 1
        except Exception as exc:  # noqa: BLE001 - a closed socket: the reader reconnects
            self.errors.append(f"send: {type(exc).__name__}")

    async def click(self, label: str = "Train", numbers: dict[str, int] | None = None) -> None:
        """Press the button ``label`` (after setting ``numbers``: number_input label -> value)."""
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        await self.loaded.wait()
        widgets = []
        for number_label, value in (numbers or {}).items():
            widgets.append(WidgetState(id=self.numbers[number_label], int_value=int(value)))
        widgets.append(WidgetState(id=self.buttons[label], trigger_value=True))
        self.clicked_at = time.monotonic()
        await self._send_rerun(widgets)

    async def _every(self, fragment_id: str, interval: float) -> None:
        while True:  # setInterval: the first rerun one interval after the auto_rerun message
            await asyncio.sleep(interval)
            await self._send_rerun(fragment_id=fragment_id)
            self.auto_sent += 1

    def _clear_timers(self, fragment_ids=None) -> None:
        for fragment_id in list(self.timers if fragment_ids is None else fragment_ids):
            entry = self.timers.pop(fragment_id, None)
            if entry is not None:
                entry[1].cancel()

    # ------------------------------------------------------------------ what the server sends
    def _handle(self, data: bytes, now: float) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        msg = ForwardMsg()
        msg.ParseFromString(data)
        self.received += 1
        self.bytes += len(data)
        self.last_received = now
        self.received_at.append(now)
        kind = msg.WhichOneof("type")
        if kind == "new_session":
            self.page_script_hash = msg.new_session.page_script_hash or self.page_script_hash
            if not msg.metadata.run.fragment_ids:
                self._clear_timers()  # a full run: the browser's cleanupAutoReruns
        elif kind == "page_info_changed":
            self.query = msg.page_info_changed.query_string
        elif kind == "auto_rerun":
            fragment_id, interval = msg.auto_rerun.fragment_id, msg.auto_rerun.interval
            if fragment_id and self.timers.get(fragment_id, (None,))[0] != interval:
                self._clear_timers([fragment_id])
                self.timers[fragment_id] = (interval, asyncio.ensure_future(self._every(fragment_id, interval)))
        elif kind == "stop_auto_rerun":
            self._clear_timers(list(msg.stop_auto_rerun.fragment_ids))
        elif kind == "script_finished":
            if msg.script_finished != ForwardMsg.ScriptFinishedStatus.FINISHED_EARLY_FOR_RERUN:
                if self.loaded_at is None and self.train_button_at is not None:
                    self.loaded_at = now
                    self.loaded.set()
        elif kind == "delta":
            delta = msg.delta
            which = delta.WhichOneof("type")
            if which == "add_block" and delta.add_block.WhichOneof("type") == "tab_container":
                self.tabs_at = self.tabs_at or now
            elif which == "new_element":
                element = delta.new_element
                etype = element.WhichOneof("type")
                if etype == "button":
                    self.buttons[element.button.label] = element.button.id
                    if element.button.label == "Train":
                        self.train_button_at = self.train_button_at or now
                elif etype == "number_input":
                    self.numbers[element.number_input.label] = element.number_input.id
                elif etype == "plotly_chart":
                    if (self.clicked_at is not None and self.first_curve_at is None
                            and LOSS_CHART_KEY in element.plotly_chart.id):
                        self.first_curve_at = now
                text = _element_text(element)
                if text and self.clicked_at is not None:
                    if self.queue_at is None and QUEUE_TEXT in text and "position" in text:
                        self.queue_at = now
                    self.texts = (self.texts + [text[:160]])[-6:]

    async def run(self, stop: asyncio.Event, open_timeout: float = 120) -> None:
        """Load the page and keep it open until ``stop``; reconnect (and rerun) when the server closes."""
        from websockets.asyncio.client import connect

        self.started = time.monotonic()
        if self.assets is not None:  # a first visit: index.html and the static files, 6 at a time
            from stclient import fetch_assets

            try:
                await asyncio.to_thread(fetch_assets, self.base_url, self.assets)
            except Exception as exc:  # noqa: BLE001 - recorded; the page still connects
                self.errors.append(f"assets: {type(exc).__name__}: {exc}"[:160])
            self.assets_at = time.monotonic()
        first = True
        while not stop.is_set():
            try:
                async with connect(self.ws_url, subprotocols=["streamlit"], origin=self.base_url, max_size=None,
                                   open_timeout=open_timeout, ping_interval=None) as socket:
                    self._socket = socket
                    if not first:
                        self.reconnects += 1
                    first = False
                    await self._send_rerun()  # a fresh page, or the browser's run after a reconnect
                    stopper = asyncio.ensure_future(stop.wait())
                    while not stop.is_set():
                        receiver = asyncio.ensure_future(socket.recv())
                        done, _ = await asyncio.wait({receiver, stopper}, return_when=asyncio.FIRST_COMPLETED)
                        if receiver not in done:
                            receiver.cancel()
                            break
                        self._handle(receiver.result(), time.monotonic())
                    stopper.cancel()
            except Exception as exc:  # noqa: BLE001 - closed by the server: reconnect as a browser does
                self.errors.append(f"{type(exc).__name__}: {exc}"[:160])
                self._socket = None
                self._clear_timers()
                if not stop.is_set():
                    await asyncio.sleep(1.0)
        self._socket = None
        self._clear_timers()

    # ------------------------------------------------------------------ results
    def longest_silence(self, start: float, end: float) -> float:
        """The longest stretch within [start, end] in which this page received nothing (a live page gets its
        refresh every few seconds; a page the server starves shows long silences)."""
        times = [start] + [t for t in self.received_at if start < t < end] + [end]
        return round(max(b - a for a, b in zip(times, times[1:])), 2)

    def report(self, now: float | None = None) -> dict:
        now = time.monotonic() if now is None else now

        def since(t0, t1):
            return None if t0 is None or t1 is None else round(t1 - t0, 3)

        return {
            "load_assets_s": since(self.started, self.assets_at),
            "load_train_button_s": since(self.started, self.train_button_at),
            "load_tabs_s": since(self.started, self.tabs_at),
            "load_finished_s": since(self.started, self.loaded_at),
            "first_curve_s": since(self.clicked_at, self.first_curve_at),
            "queue_estimate_s": since(self.clicked_at, self.queue_at),
            "sent": self.sent, "auto_reruns_sent": self.auto_sent, "received": self.received, "bytes": self.bytes, "reconnects": self.reconnects,
            "seconds_since_last_received": since(self.last_received, now),
            "fragment_timers": {k[:8]: v[0] for k, v in self.timers.items()},
            "errors": self.errors[:3], "last_texts": self.texts[-3:],
        }


async def classroom(base_url: str, students: int, spread: float, deadline: float,
                    numbers=None, wait: str = "curve", assets: list[str] | None = None) -> list[dict]:
    """``students`` pages load at once and press Train within ``spread`` seconds (in load order, evenly
    spaced); then wait until each shows its first curve (``wait="curve"``) or its queue position and
    estimate (``"queue"``), at most ``deadline`` seconds after the last click. ``numbers(n)`` gives student
    ``n``'s number inputs (label -> value) to set with the click; ``assets`` the static files each page
    fetches first. Returns each student's :meth:`report`; the pages close at the end.
    """
    stop = asyncio.Event()
    pupils = [Student(base_url, name=f"s{n}", assets=assets) for n in range(students)]
    tasks = [asyncio.ensure_future(p.run(stop)) for p in pupils]
    try:
        await click_all(pupils, spread, numbers)
        await wait_for(pupils, deadline, wait)
        return [p.report() for p in pupils]
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


async def click_all(pupils: list[Student], spread: float, numbers=None, load_timeout: float = 300) -> None:
    """Wait for the pages to load (at most ``load_timeout`` s), then press Train on each loaded one, evenly
    spread over ``spread`` seconds; a page not loaded by then does not click (its ``first_curve_s`` is None
    with no click: counted apart)."""
    end = time.monotonic() + load_timeout
    while time.monotonic() < end and not all(p.loaded.is_set() for p in pupils):
        await asyncio.sleep(0.1)
    gap = spread / max(1, len(pupils))
    for n, pupil in enumerate(pupils):
        if pupil.loaded.is_set():
            await pupil.click("Train", numbers(n) if numbers else None)
        await asyncio.sleep(gap)


async def wait_for(pupils: list[Student], deadline: float, what: str) -> None:
    """Until every student that clicked shows its first curve (``what="curve"``) or its queue position and
    estimate (``"queue"``), at most ``deadline`` seconds."""
    attr = "first_curve_at" if what == "curve" else "queue_at"
    end = time.monotonic() + deadline
    while time.monotonic() < end and any(getattr(p, attr) is None and p.clicked_at is not None for p in pupils):
        await asyncio.sleep(0.2)
