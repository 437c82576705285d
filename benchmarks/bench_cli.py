"""How fast the command line answers a mistake: wall seconds from start to the ``error:`` line.

Each case runs ``python -m lapmusic.cli ...`` in a fresh interpreter (what a user waits for), ``--repeats``
times; the table gives the median and the slowest run, and the load average around the measurement.

    python benchmarks/bench_cli.py                       # this checkout
    python benchmarks/bench_cli.py --source /tmp/old     # another copy of the code (e.g. before a change)

The cases make no network access and write nothing (each run's working folder is a fresh temporary one).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = [
    ("train --dataset foo", ["train", "--dataset", "foo", "--hidden", "8", "--out", "new"]),
    ("lae --dataset foo", ["lae", "--dataset", "foo", "--hidden", "8"]),
    ("evaluate missing_folder", ["evaluate", "missing_folder"]),
    ("generate RUN --soundfont /nope.sf2", ["generate", "RUN", "--out", "new.mid", "--wav", "new.wav",
                                             "--soundfont", "/nope.sf2"]),
    ("compare --dataset foo", ["compare", "--dataset", "foo", "--hidden", "8", "--epochs", "1", "--out", "new"]),
    ("--help", ["--help"]),
]


def time_case(argv: list[str], source: Path, run_folder: Path) -> tuple[float, int, str]:
    with tempfile.TemporaryDirectory() as folder:
        env = dict(os.environ, PYTHONPATH=str(source), LAPMUSIC_RUNS_DIR=folder, LAPMUSIC_CACHE_DIR=folder)
        argv = [str(run_folder) if a == "RUN" else a for a in argv]
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "lapmusic.cli", *argv], capture_output=True, text=True,
                              cwd=folder, env=env, timeout=300)
        seconds = time.perf_counter() - started
    last = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or [""])[-1]
    return seconds, done.returncode, last


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=str(Path(__file__).resolve().parents[1]),
                        help="folder holding the lapmusic package to time (default: this checkout)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per case (default 5)")
    args = parser.parse_args(argv)
    source = Path(args.source).resolve()
    print(f"lapmusic from {source}; {os.cpu_count()} CPUs; load average before "
          f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("| command | median s | max s | exit | last line |")
    print("| --- | ---: | ---: | ---: | --- |")
    with tempfile.TemporaryDirectory() as folder:
        # A run folder that passes a cheap check (config.json present): with it, generate reaches the
        # soundfont check. The old code loaded and sampled first, so it fails there on the empty config.
        run_folder = Path(folder) / "run"
        run_folder.mkdir()
        (run_folder / "config.json").write_text("{}")
        for label, case in CASES:
            runs = [time_case(case, source, run_folder) for _ in range(args.repeats)]
            seconds = [r[0] for r in runs]
            print(f"| `{label}` | {statistics.median(seconds):.2f} | {max(seconds):.2f} | {runs[-1][1]} | "
                  f"{runs[-1][2][:90]} |", flush=True)
    print(f"load average after {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
