"""The upload endpoint flooded: what one page sending many large files costs a real server.

A real ``streamlit run app.py`` on 127.0.0.1 (temporary cache and runs folders); one page connects over the
websocket (its first script run guards the endpoint) and, without ever pressing "Build dataset", sends
``--files`` files of ``--mb`` MB each (spread over ``--pages`` pages of the same client) to ``/_stcore/upload_file`` with its own XSRF cookie and header
(benchmarks/upload_client.py), one after the other, as fast as the loopback takes them. Reported: the
server's resident memory (``VmRSS``) idle after the first page, its peak during the flood (sampled every
50 ms), 10 s after the page disconnects and ``--after`` s later; accepted and refused uploads; the slowest
refusal (seconds from the request's first byte to the status line). ``--repo`` serves another checkout's app
(e.g. the main branch, without the gate) for a baseline in the same run.

    .venv/bin/python benchmarks/bench_upload_flood.py [--files 40] [--mb 15.9] [--pages 1] [--repo PATH]...

Targets: peak within 500 MB of idle; every refusal answered in under 1 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from upload_client import open_session, put_file  # noqa: E402

MB = 1024 * 1024


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def start_server(repo: Path, folder: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "LAPMUSIC_CACHE_DIR": str(folder / "cache"), "LAPMUSIC_RUNS_DIR": str(folder / "runs"),
           "PYTHONPATH": str(repo)}
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(repo / "app.py"), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=repo, env=env, stdout=open(folder / "server.log", "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return process, url
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit(f"the server did not start: {(folder / 'server.log').read_text(errors='replace')[-2000:]}")


def flood(repo: Path, files: int, mb: float, after: float, pages: int = 1) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        process, url = start_server(repo, Path(tmp))
        try:
            with open_session(url):
                pass  # the first page: the app is imported, the endpoint guarded
            time.sleep(2.0)
            idle = rss_mb(process.pid)
            peak, stop = [idle], threading.Event()

            def sample() -> None:
                while not stop.wait(0.05):
                    peak.append(rss_mb(process.pid))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            answers = []
            started = time.monotonic()
            with contextlib.ExitStack() as stack:
                sessions = [stack.enter_context(open_session(url)) for _ in range(pages)]
                for n in range(files):
                    answers.append(put_file(url, sessions[n % pages], int(mb * MB), name=f"f{n}.mid"))
                during = rss_mb(process.pid)
            flood_s = time.monotonic() - started
            time.sleep(10.0)
            after_10 = rss_mb(process.pid)
            time.sleep(max(0.0, after - 10.0))
            after_n = rss_mb(process.pid)
            stop.set()
            sampler.join()
        finally:
            process.terminate()
            process.wait(timeout=30)
    refused = [a for a in answers if a["status"] != 204]
    return {
        "repo": str(repo), "pages": pages, "files": files, "mb_each": mb, "accepted": len(answers) - len(refused),
        "refused": len(refused), "statuses": sorted({a["status"] for a in answers}),
        "reasons": sorted({a["reason"] for a in refused})[:3],
        "slowest_refusal_s": round(max((a["answer_s"] for a in refused), default=0.0), 3),
        "slowest_accepted_s": round(max((a["answer_s"] for a in answers if a["status"] == 204), default=0.0), 3),
        "flood_s": round(flood_s, 1), "rss_idle_mb": round(idle), "rss_peak_mb": round(max(peak)),
        "rss_end_of_flood_mb": round(during), "rss_10s_after_mb": round(after_10),
        f"rss_{after:g}s_after_mb": round(after_n), "peak_above_idle_mb": round(max(peak) - idle),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--mb", type=float, default=15.9, help="MB (2**20 bytes) per file; Streamlit refuses 16")
    parser.add_argument("--pages", type=int, default=1, help="pages of the same client the files are spread over")
    parser.add_argument("--after", type=float, default=30.0, help="the last memory reading, s after disconnecting")
    parser.add_argument("--repo", type=Path, action="append",
                        help="a checkout whose app.py to serve (repeat for a baseline); default this one")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    repos = args.repo or [Path(__file__).resolve().parents[1]]
    results = [flood(repo.resolve(), args.files, args.mb, args.after, args.pages) for repo in repos]
    for result in results:
        print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
