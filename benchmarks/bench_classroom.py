"""A classroom on one machine: a real ``streamlit run app.py`` on 127.0.0.1 and real headless Chromium pages.

Three phases, each bounded in count and time (nothing here is a test: it prints what it measured):

1. ``--students`` sessions (default 30) open the app and press Train on the default settings within
   ``--spread`` seconds (default 10). Measured: for each, seconds from its click to a first loss curve on its
   Training tab; and how many run folders were made (identical settings share one run: expect one pair).
2. ``--settings`` sessions (default 8) each train different settings (hidden units 16, 24, ...). Measured:
   seconds from the click to the queue position with its estimate on the page; then, while they train,
   ``--loads`` fresh page loads one after the other (seconds from navigation to a usable sidebar and tabs).
   Greying: every page samples, every 100 ms, whether any of its elements is marked stale (Streamlit draws
   those faded while it redraws them); reported as the longest faded stretch per page, for the eight open
   pages and for each fresh page (over its load and the 2 s after it). Page loads are measured four ways:
   (a) fresh pages with the eight pages open in the same browser, (b) fresh pages with them closed, both in
   Chromium on the server's own cores; (c) without a browser (``stclient.py``): the HTTP fetches of a first
   visit plus the app's script run over Streamlit's websocket, i.e. what the server gives a page whatever
   the student's computer; (d) reloads of one page with the browser's cache warm (a refresh, a second visit).
3. ``kill -9`` of the server mid-training, restart. Measured: runs before/after (none lost), the queue order
   before/after (unchanged), whether the worker that was training survived and was adopted; then ``kill -9``
   of that worker and the seconds until the run reads as interrupted and resumable; and a session link from
   phase 2 bringing back its runs. Finally a clean stop, checking the server log for "terminate called".

    python benchmarks/bench_classroom.py --epochs 2 --json-out classroom.json
    python benchmarks/bench_classroom.py --students 10 --settings 0   # phase 1 only
    python benchmarks/bench_classroom.py --clients http --epochs 2     # phases 1-2 with HTTP students

With ``--clients http``, phase 2 also checks the queue estimates: the estimates the pages show right after the
last click (computed as the server does, over the same folder and queue) against each run's real end, printed
as the fraction of queued runs that ended within 2x of their estimate and inside its range.

``--clients http`` replaces the Chromium pages of phases 1 and 2 by HTTP students (``stclass.py``, driven by
``classroom_http.py``) that speak Streamlit's websocket protocol as the browser does at almost no CPU; phase 3
and greying need the browser and are skipped. When a phase-1 page has no curve by the deadline, the server's
threads are dumped into its log (``streamlit.log`` in the run's folder, SIGUSR1 + ``faulthandler``).

Each page that shows no curve by the deadline is described in ``phase1_pages_without_curve`` (its open tab,
its messages, its first JavaScript errors), so that a missing curve can be told apart from a page that is elsewhere or shows an error.

Uses a temporary runs folder; the dataset cache is a temporary folder holding a link to the Bach set of
the usual cache (built once by ``lapmusic datasets``). Needs Playwright and /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
CURVE_JS = """() => [...document.querySelectorAll('.js-plotly-plot')].some(
    p => (p.data || []).some(t => t.x && t.x.length >= 1))"""
# What a page without a curve shows: its open tab, its messages (the first 160 characters of each).
# ``charts`` counts Streamlit's chart elements (what the server sent), ``plots`` the charts Plotly has drawn in
# them; ``stale`` the elements drawn faded; ``status`` Streamlit's running/connecting indicator.
PAGE_STATE_JS = """() => ({
    tab: ([...document.querySelectorAll('[role=tab][aria-selected=true]')].map(t => t.innerText.trim())[0] || null),
    alerts: [...document.querySelectorAll('[data-testid=stAlert], [data-testid=stException]')].map(
        a => a.innerText.trim().slice(0, 160)),
    charts: document.querySelectorAll('[data-testid=stPlotlyChart]').length,
    plots: document.querySelectorAll('.js-plotly-plot').length,
    stale: document.querySelectorAll('[data-stale="true"]').length,
    status: ([...document.querySelectorAll('[data-testid=stStatusWidget]')].map(t => t.innerText.trim())[0] || null),
    main: ((document.querySelector('[data-testid=stMain]') || {}).innerText || '').trim().slice(0, 400),
    url: location.href})"""


# Greying: Streamlit marks an element it is about to redraw with data-stale="true" and draws it faded until
# the new one arrives. Sampled every 100 ms in each page from its first script on: the longest stretch in
# which any element of the page was stale, and the total.
STALE_SAMPLER_JS = """(() => {
    const s = window.__lmStale = {longest_ms: 0, total_ms: 0, since: null};
    setInterval(() => {
        const now = performance.now();
        if (document.querySelector('[data-stale="true"]')) {
            if (s.since === null) s.since = now;
            s.longest_ms = Math.max(s.longest_ms, now - s.since);
            s.total_ms += 100;
        } else s.since = null;
    }, 100);
})();"""
STALE_JS = "() => window.__lmStale ? {longest_s: window.__lmStale.longest_ms / 1000, total_s: window.__lmStale.total_ms / 1000} : null"


# ``streamlit run`` as ``python -m streamlit`` starts it, plus a thread dump of every thread into the server log
# on SIGUSR1 (Python's faulthandler): the benchmark takes one when a page got no curve by the deadline.
# With BENCH_DUMP_EVERY=SECONDS (benchmark only), every thread's stack every SECONDS into BENCH_DUMP_FILE: a
# sampling profile of the server (where its threads wait or work) without a profiler installed. For diagnosis
# only: faulthandler reads the other threads' frames while they run, and in 2 of 5 such runs the server
# segfaulted (``server_died_exit_code`` in the JSON; such a run's figures are void).
DUMPABLE_STREAMLIT = """
import faulthandler, os, signal
faulthandler.register(signal.SIGUSR1, all_threads=True)
if os.environ.get("BENCH_DUMP_EVERY"):
    faulthandler.dump_traceback_later(float(os.environ["BENCH_DUMP_EVERY"]), repeat=True,
                                      file=open(os.environ["BENCH_DUMP_FILE"], "w"))
from streamlit.web.cli import main
main(prog_name="streamlit")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values, q):
    values = sorted(values)
    if not values:
        return None
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def summary(values) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0}
    return {"n": len(values), "median": round(statistics.median(values), 2), "p95": round(percentile(values, 0.95), 2),
            "max": round(max(values), 2)}


class Server:
    def __init__(self, env: dict, log_path: Path):
        self.env, self.log_path, self.port = env, log_path, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> float:
        started = time.monotonic()
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-c", DUMPABLE_STREAMLIT, "run", str(REPO / "app.py"), "--server.port", str(self.port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        while time.monotonic() - started < timeout:
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except OSError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"streamlit did not start; see {self.log_path}")

    def dump_threads(self) -> None:
        """Every thread's Python stack into the server log (``faulthandler`` on SIGUSR1, see DUMPABLE_STREAMLIT)."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGUSR1)
            time.sleep(1.0)

    def kill9(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def open_session(browser, url: str, timeout_ms: int = 120_000, static: set | None = None):
    """A new browser context and page on ``url``; returns (context, page, seconds until the sidebar's Train
    button and the tabs are visible). ``static`` collects the static files the page asked for."""
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    context.add_init_script(STALE_SAMPLER_JS)
    page = context.new_page()
    if static is not None:
        page.on("request", lambda request: "/static/" in request.url and static.add(request.url))
    started = time.monotonic()
    page.goto(url, timeout=timeout_ms)
    _wait_usable(page, timeout_ms)
    return context, page, time.monotonic() - started


def _wait_usable(page, timeout_ms: int) -> None:
    page.get_by_test_id("stSidebar").get_by_role("button", name="Train", exact=True).wait_for(timeout=timeout_ms)
    page.get_by_role("tab", name="Training", exact=True).wait_for(timeout=timeout_ms)


def warm_reloads(browser, url: str, count: int) -> list[float]:
    """``count`` reloads of one page after a first visit: a student's refresh or second visit, with Streamlit's
    static files in the browser's cache (served ``immutable``) and the session restored from its link."""
    context, page, _ = open_session(browser, url, timeout_ms=60_000)  # the first visit fills the cache
    out = []
    for _ in range(count):
        started = time.monotonic()
        try:
            page.reload(timeout=60_000)
            _wait_usable(page, 60_000)
            out.append(time.monotonic() - started)
        except Exception:  # noqa: BLE001 - a reload over 60 s
            out.append(60.0)
    context.close()
    return out


def server_side_loads(url: str, count: int, static: set) -> dict:
    """``count`` page loads without a browser (``stclient.py``): the HTTP fetches of a first visit (index and
    the static files a browser asked for) and the app's script run over Streamlit's websocket."""
    from stclient import fetch_assets, load_page, revalidate_index

    http, run, button, total, first = [], [], [], [], None
    for _ in range(count):
        assets = fetch_assets(url, sorted(static))
        try:
            page = load_page(url, timeout=60)
        except Exception as exc:  # noqa: BLE001 - a run over 60 s: counted as 60 s
            page = {"finished_s": None, "train_button_s": None, "error": f"{type(exc).__name__}: {exc}"[:200]}
        http.append(assets["total_s"])
        run.append(page["finished_s"] if page["finished_s"] is not None else 60.0)
        button.append(page["train_button_s"])
        total.append(http[-1] + run[-1])
        first = first or (assets, page)
    keys = ("files", "bytes", "compressed", "index_cache_control", "index_etag", "asset_cache_control", "statuses")
    return {
        "phase2_server_http_first_visit_s": summary(http),
        "phase2_server_script_run_s": summary(run),
        "phase2_server_train_button_s": summary(button),
        "phase2_server_page_load_s": summary(total),
        "phase2_server_assets": {k: first[0][k] for k in keys},
        "phase2_server_messages_per_page": first[1].get("messages"),
        "phase2_server_revalidated_index": revalidate_index(url),
        "phase2_load_average_c": os.getloadavg(),
    }


def _longest_stale(page) -> float | None:
    try:
        state = page.evaluate(STALE_JS)
    except Exception:  # noqa: BLE001 - a page that is gone: nothing measured
        return None
    return None if state is None else round(state["longest_s"], 2)


def _watch_socket(ws, counts: dict) -> None:
    """Count a page's websocket traffic: a page whose server stopped sending (or that reconnected) shows here."""
    if "/_stcore/stream" not in ws.url:
        return
    counts["opened"] += 1

    def received(_payload):
        counts["received"] += 1
        counts["last_received"] = time.monotonic()

    def sent(_payload):
        counts["sent"] += 1

    ws.on("framereceived", received)
    ws.on("framesent", sent)
    ws.on("close", lambda _ws: counts.__setitem__("closed", counts["closed"] + 1))


def _socket_summary(counts: dict) -> dict:
    out = {k: v for k, v in counts.items() if k != "last_received"}
    last = counts["last_received"]
    out["seconds_since_last_received"] = None if last is None else round(time.monotonic() - last, 1)
    return out


def run_folders(runs_dir: Path) -> dict[str, str]:
    from lapmusic.jobs.runs import list_runs

    return {r.name: r.state for r in list_runs(runs_dir)}


def queue_order(runs_dir: Path) -> list[str]:
    from lapmusic.core.io import read_json

    return [e["run"] for e in (read_json(runs_dir / ".lapmusic" / "queue.json") or {}).get("queue", [])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--spread", type=float, default=10.0, help="seconds over which the students press Train")
    parser.add_argument("--settings", type=int, default=8)
    parser.add_argument("--loads", type=int, default=10, help="page loads measured in each of two conditions")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--deadline", type=float, default=240.0, help="seconds to wait for the first curves")
    parser.add_argument("--hold", type=float, default=0.0,
                        help="--clients http: keep the class's pages open this many seconds after the first curves "
                             "and report each page's longest time without a message (its refreshes stalled)")
    parser.add_argument("--estimate-wait", type=float, default=900.0,
                        help="--clients http: after phase 2, wait at most this many seconds for its runs to end and "
                             "print how many finished within 2x of the queue estimate shown at their click (0: skip)")
    parser.add_argument("--json-out")
    parser.add_argument("--clients", choices=("chromium", "http"), default="chromium",
                        help="students as headless Chromium pages (default) or as HTTP clients speaking Streamlit's "
                             "websocket protocol (stclass.py: almost no CPU; phases 1-2 only, no greying)")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from lapmusic.data.catalog import BACH_CACHE_NAME
    from lapmusic.data.dataset import cache_dir

    root = Path(tempfile.mkdtemp(prefix="bench-classroom-"))
    runs_dir, cache = root / "runs", root / "cache"
    cache.mkdir(parents=True)
    bach = cache_dir() / BACH_CACHE_NAME
    if bach.is_file():
        (cache / BACH_CACHE_NAME).symlink_to(bach)
    env = dict(os.environ, LAPMUSIC_RUNS_DIR=str(runs_dir), LAPMUSIC_CACHE_DIR=str(cache),
               LAPMUSIC_APP_DEFAULTS=json.dumps({"epochs": args.epochs}))
    server = Server(env, root / "streamlit.log")
    result: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "load_before": os.getloadavg(),
                    "args": vars(args), "folder": str(root)}
    result["server_start_s"] = round(server.start(), 2)
    print(f"server on {server.url}, folder {root}", flush=True)
    try:
        if args.clients == "http":
            _http_phases(args, server, runs_dir, result, sync_playwright)
        else:
            _phases(args, server, runs_dir, result, sync_playwright)
    finally:
        if server.process.poll() is not None:  # the server died during the benchmark: its figures are void
            result["server_died_exit_code"] = server.process.returncode
        if server.process.poll() is None:
            code = server.stop()
            log_text = (root / "streamlit.log").read_text(errors="replace")
            result["clean_stop_exit_code"] = code
            result["terminate_called_in_log"] = "terminate called" in log_text
        # Leave no worker behind: stop every run still queued or training.
        for name in run_folders(runs_dir):
            (runs_dir / name / "cancel").touch()
    result["load_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    return 0


def _phases(args, server: Server, runs_dir: Path, result: dict, sync_playwright) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        # ---------------------------------------------------------------- phase 1: a class on the defaults
        if args.students > 0:
            _class_on_defaults(args, browser, server, runs_dir, result)
        if args.settings > 0:  # --settings 0: phase 1 only
            _different_settings_and_restart(args, browser, server, runs_dir, result)
        browser.close()


def _http_phases(args, server: Server, runs_dir: Path, result: dict, sync_playwright) -> None:
    """Phases 1-2 with HTTP students (classroom_http.py). The static files a fresh page fetches are those
    one Chromium page asked for (loaded once, before the students, then closed); without Chromium, the
    files ``index.html`` names."""
    import classroom_http

    static: set = set()
    if os.path.exists(CHROMIUM):
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            context, _, _ = open_session(browser, server.url, static=static)
            context.close()
            browser.close()
    result["static_files_per_page"] = len(static)
    assets = sorted(static)
    result["load_before_students"] = os.getloadavg()
    if args.students > 0:
        classroom_http.class_on_defaults(args, server, runs_dir, result, assets, summary, run_folders)
        print("phase 1:", json.dumps({k: v for k, v in result.items()
                                      if k.startswith("phase1") and k != "phase1_pages_without_curve"}), flush=True)
    if args.settings > 0:
        classroom_http.different_settings(args, server, runs_dir, result, assets, summary, run_folders,
                                          server_side_loads, static)
        print("phase 2:", json.dumps({k: v for k, v in result.items() if k.startswith("phase2")}), flush=True)


def _class_on_defaults(args, browser, server: Server, runs_dir: Path, result: dict) -> None:
    # All pages start loading at once (as a class does), then each is waited for in turn: the time to
    # its Train button is an upper bound when an earlier page was slower.
    students, starts, errors, sockets = [], [], [], []
    for n in range(args.students):
        context = browser.new_context(viewport={"width": 1300, "height": 900})
        page = context.new_page()
        errors.append([])  # the page's uncaught JavaScript errors and console errors, for pages without a curve
        page.on("pageerror", lambda exc, n=n: errors[n].append(f"pageerror: {exc}"[:200]))
        page.on("console", lambda msg, n=n: msg.type == "error" and errors[n].append(f"console: {msg.text}"[:200]))
        sockets.append({"opened": 0, "closed": 0, "sent": 0, "received": 0, "last_received": None})
        page.on("websocket", lambda ws, n=n: _watch_socket(ws, sockets[n]))
        starts.append(time.monotonic())
        page.goto(server.url, wait_until="commit", timeout=120_000)
        students.append((context, page))
    loads = []
    for (_, page), started in zip(students, starts):
        page.get_by_test_id("stSidebar").get_by_role("button", name="Train", exact=True).wait_for(timeout=300_000)
        loads.append(time.monotonic() - started)
    result["phase1_page_load_s"] = summary(loads)
    clicks = []
    gap = args.spread / max(1, args.students)
    print("phase 1 loads:", json.dumps(result["phase1_page_load_s"]), flush=True)
    for _, page in students:
        try:
            page.get_by_test_id("stSidebar").get_by_role("button", name="Train", exact=True).click(
                no_wait_after=True, timeout=120_000)
            clicks.append(time.monotonic())
        except Exception:  # noqa: BLE001 - a page too slow to take the click: counted, not fatal
            clicks.append(None)
        time.sleep(gap)
    result["phase1_clicks_failed"] = sum(c is None for c in clicks)
    done_clicks = [c for c in clicks if c is not None]
    result["phase1_click_spread_s"] = round(max(done_clicks) - min(done_clicks), 2)
    first_curve: list[float | None] = [None] * len(students)
    deadline = time.monotonic() + args.deadline
    while time.monotonic() < deadline and any(v is None and c is not None for v, c in zip(first_curve, clicks)):
        for n, (_, page) in enumerate(students):
            if first_curve[n] is None and clicks[n] is not None:
                try:
                    if page.evaluate(CURVE_JS):
                        first_curve[n] = time.monotonic() - clicks[n]
                except Exception:  # noqa: BLE001 - a page in the middle of a rerun
                    pass
        time.sleep(0.5)
    result["phase1_first_curve_s"] = summary(first_curve)
    result["phase1_without_curve"] = sum(v is None and c is not None for v, c in zip(first_curve, clicks))
    states = []
    for n, (_, page) in enumerate(students):
        if first_curve[n] is None and clicks[n] is not None:
            try:
                states.append(dict(page.evaluate(PAGE_STATE_JS), js_errors=errors[n][:5],
                                   websocket=_socket_summary(sockets[n])))
            except Exception as exc:  # noqa: BLE001 - recorded as what it is
                states.append({"error": f"{type(exc).__name__}: {exc}"[:200], "js_errors": errors[n][:5],
                               "websocket": _socket_summary(sockets[n])})
    result["phase1_pages_without_curve"] = states
    result["phase1_pages_whose_websocket_reconnected"] = sum(c["opened"] > 1 for c in sockets)
    result["phase1_run_folders"] = len(run_folders(runs_dir))
    print("phase 1:", json.dumps({k: v for k, v in result.items() if k.startswith("phase1")}), flush=True)
    for context, _ in students:
        context.close()


def _different_settings_and_restart(args, browser, server: Server, runs_dir: Path, result: dict) -> None:
    # ---------------------------------------------------------------- phase 2: eight different settings
    others, waits, links = [], [], []
    for n in range(args.settings):
        context, page, _ = open_session(browser, server.url)
        try:
            field = page.get_by_test_id("stSidebar").get_by_role("spinbutton", name="Hidden units")
            field.fill(str(16 + 8 * n), timeout=120_000)
            field.press("Enter")
            time.sleep(1.0)  # the rerun that takes the new value
            started = time.monotonic()
            page.get_by_test_id("stSidebar").get_by_role("button", name="Train", exact=True).click(timeout=120_000)
            page.get_by_text("position", exact=False).first.wait_for(timeout=60_000)
            page.get_by_text("starts in about", exact=False).first.wait_for(timeout=60_000)
            waits.append(time.monotonic() - started)
        except Exception:  # noqa: BLE001 - recorded as missing
            waits.append(None)
        others.append((context, page))
        links.append(page.url)
    result["phase2_queue_estimate_s"] = summary(waits)
    static: set = set()  # the static files the fresh pages asked for: fetched again by the HTTP client in (c)

    def page_loads(count: int, stale: list) -> list[float]:
        """``count`` fresh page loads; appends to ``stale`` each page's longest faded stretch."""
        out = []
        for _ in range(count):
            try:
                context, page, seconds = open_session(browser, server.url, timeout_ms=60_000, static=static)
                out.append(seconds)
                page.wait_for_timeout(2000)  # a student reads the page: reruns while it is open count too
                stale.append(_longest_stale(page))
                context.close()
            except Exception:  # noqa: BLE001 - a load over 60 s
                out.append(60.0)
        return out

    # (a) with the eight pages open and polling in the same browser on this machine, (b) after closing
    # them: then only the server and its training workers compete with the new page (as in a classroom,
    # where the students' browsers run on their own computers).
    stale_a, stale_b = [], []
    result["phase2_page_load_with_8_pages_open_s"] = summary(page_loads(args.loads, stale_a))
    result["phase2_longest_stale_of_the_new_pages_a_s"] = summary(stale_a)
    result["phase2_load_average_a"] = os.getloadavg()
    # The eight pages have been open since their click, their Training tabs polling the queue and curves.
    result["phase2_longest_stale_of_the_8_pages_s"] = summary([_longest_stale(page) for _, page in others])
    for context, _ in others[1:]:
        context.close()
    result["phase2_runs_training"] = sum(1 for s in run_folders(runs_dir).values() if s == "running")
    result["phase2_page_load_while_training_s"] = summary(page_loads(args.loads, stale_b))
    result["phase2_load_average_b"] = os.getloadavg()
    result["phase2_longest_stale_of_the_new_pages_b_s"] = summary(stale_b)
    # (c) the same loads without a browser on this machine: what the server gives a page (its HTTP files and
    # its script run), the part of a page load that does not depend on the student's computer.
    result.update(server_side_loads(server.url, args.loads, static))
    # (d) a student's refresh or second visit in the browser: static files cached, session from its link.
    result["phase2_warm_reload_while_training_s"] = summary(warm_reloads(browser, server.url, args.loads))
    result["phase2_load_average_d"] = os.getloadavg()
    result["phase2_runs_training_after"] = sum(1 for s in run_folders(runs_dir).values() if s == "running")
    print("phase 2:", json.dumps({k: v for k, v in result.items() if k.startswith("phase2")}), flush=True)
    others[0][0].close()

    # ---------------------------------------------------------------- phase 3: kill -9 and restart
    from lapmusic.core.io import read_json
    from lapmusic.jobs.runs import summarize_run
    from lapmusic.jobs.worker import worker_state

    before, order = run_folders(runs_dir), queue_order(runs_dir)
    running = [name for name, state in before.items() if state == "running"]
    server.kill9()
    result["phase3_restart_s"] = round(server.start(), 2)
    # The manager is created by the first page session: open one (it also restores the runs).
    context, page, _ = open_session(browser, links[0])
    after, order_after = run_folders(runs_dir), queue_order(runs_dir)
    result["phase3_runs_before_after"] = [len(before), len(after)]
    result["phase3_lost_runs"] = sorted(set(before) - set(after))
    result["phase3_queue_unchanged"] = order == order_after or order[len(running):] == order_after
    result["phase3_running_adopted"] = [after.get(name) == "running" for name in running]
    page.get_by_role("tab", name="Training", exact=True).click()
    try:
        page.get_by_text("waiting", exact=False).first.wait_for(timeout=30_000)
        result["phase3_session_link_restores_runs"] = True
    except Exception:  # noqa: BLE001
        result["phase3_session_link_restores_runs"] = False
    context.close()
    # kill -9 of a worker: whichever run trains now (wait for the restarted server to start one).
    detect = []
    deadline = time.monotonic() + 60
    while not detect and time.monotonic() < deadline:
        for name, state in run_folders(runs_dir).items():
            info = read_json(runs_dir / name / "worker.json") or {}
            if state != "running" or worker_state(runs_dir / name) != "alive" or not info.get("pid"):
                continue
            os.kill(int(info["pid"]), signal.SIGKILL)
            killed = time.monotonic()
            while time.monotonic() - killed < 30:
                summary_ = summarize_run(runs_dir / name)
                if summary_.state == "interrupted" and summary_.resumable or summary_.state == "queued":
                    detect.append({"run": name, "seconds": round(time.monotonic() - killed, 2),
                                   "state": summary_.state, "resumable": summary_.resumable})
                    break
                time.sleep(0.1)
            break
        time.sleep(0.5)
    result["phase3_killed_worker_detected"] = detect


if __name__ == "__main__":
    sys.exit(main())
