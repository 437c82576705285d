"""The performance table in one run: training frames/s of the engine and of the sampling recipe, 1 and 2 threads.

Runs ``bench_train.py`` twice per thread count and repeat (the engine at batch 32 against the batch-of-one loop,
with torch.nn.RNN as reference code runs it and with lapmusic's hand-written steps;
JSB's sampling recipe against the Bernoulli output at batch 8; each pair interleaved epoch by epoch), each in a
process of its own so that its peak resident memory is its own, then ``bench_eval.py`` for the recipe's
evaluation memory and ``bench_flops.py`` for the arithmetic per frame of each output, and prints the median and
the range (min-max) over the repeats of every figure, with ``uptime`` before and after.

    LAPMUSIC_DATA_DIR=/path/to/datasets python benchmarks/bench_table.py            # what `make bench` runs
    python benchmarks/bench_table.py --repeats 5 --seconds 10 --uncapped          # slower, more settled

The thread counts are asked for with ``--threads``; training caps small problems to one thread
(lapmusic.core.device.engine_threads), and so does bench_train, so the table names the threads used.
``--uncapped`` adds 2-thread runs without the cap: what the cap avoids.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# JSB's sampling recipe as README.md trains it (batch 8, NADE 64 units, chord vocabulary 512, copy window 32).
RECIPE = ["--output", "nade", "--skip-batching", "--batch-size", "8", "--nade-hidden", "64", "--nade-vocab", "512",
          "--nade-repeat-window", "32"]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def bench_train(args, threads: int, capped: bool, extra: list[str]) -> dict:
    """One bench_train.py run on the CPU; its JSON (rows, threads used, peak resident memory)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "train.json"
        command = [sys.executable, str(HERE / "bench_train.py"), "--dataset", args.dataset, "--devices", "cpu",
                   "--hidden", str(args.hidden), "--seconds", str(args.seconds), "--threads", str(threads),
                   *extra, "--json-out", str(out)] + ([] if capped else ["--no-thread-cap"])
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def measure(args, threads: int, capped: bool) -> tuple[dict, int]:
    """The table's figures from two bench_train.py runs (the engine, batch 32; the recipe, batch 8) and the
    threads the engine used."""
    engine = bench_train(args, threads, capped, ["--batch-size", str(args.batch_size)])
    recipe = bench_train(args, threads, capped, RECIPE)
    reference, one, ours = (row["frames_per_second"] for row in engine["rows"])
    bernoulli, nade = (row["frames_per_second"] for row in recipe["rows"])
    return {"reference loop (torch.nn.RNN, batch of one), frames/s": reference,
            "batch of one (lapmusic's steps), frames/s": one,
            f"engine (Bernoulli, batch {args.batch_size}), frames/s": ours,
            "engine / reference loop": ours / reference, "engine / batch of one": ours / one,
            "Bernoulli output, batch 8, frames/s": bernoulli,
            "recipe (batch 8, NADE 64, vocab 512, window 32), frames/s": nade, "recipe / Bernoulli": nade / bernoulli,
            "peak resident memory of training, GiB": max(engine["peak_resident_gib"], recipe["peak_resident_gib"])
            }, engine["threads_used"]


def spread(values: list[float]) -> str:
    fmt = "{:,.0f}" if max(values) >= 100 else "{:.2f}"
    return f"{fmt.format(statistics.median(values))} | {fmt.format(min(values))}-{fmt.format(max(values))}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="jsb", help="dataset key (default jsb)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per thread count (default 3)")
    parser.add_argument("--seconds", type=float, default=5.0, help="bench_train.py --seconds (default 5)")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", default="1,2", help="thread counts asked for (default 1,2)")
    parser.add_argument("--uncapped", action="store_true", help="also 2 threads without the one-thread cap")
    parser.add_argument("--eval-pieces", type=int, default=64, help="bench_eval.py --pieces (0: skip it)")
    parser.add_argument("--flops-pieces", type=int, default=100, help="bench_flops.py --max-pieces (0: skip it)")
    args = parser.parse_args(argv)
    settings = [(int(t), True) for t in args.threads.split(",")] + ([(2, False)] if args.uncapped else [])

    print(f"before: {uptime()}", flush=True)
    runs: dict[tuple[int, bool], list[dict]] = {setting: [] for setting in settings}
    used: dict[tuple[int, bool], int] = {}
    for repeat in range(args.repeats):
        for threads, capped in settings:  # interleaved: a change of load hits every setting alike
            row, used[threads, capped] = measure(args, threads, capped)
            runs[threads, capped].append(row)
            print(f"  repeat {repeat + 1}/{args.repeats}, {threads} thread(s) asked"
                  f"{'' if capped else ' (no cap)'}: done", flush=True)

    print(f"\n{args.dataset}, {args.hidden} units, batch {args.batch_size}, bench_train.py --seconds {args.seconds}, "
          f"{args.repeats} runs per column: median | range (min-max)\n")
    columns = [f"{t} asked ({used[t, c]} used{'' if c else ', no cap'})" for t, c in settings]
    print("| figure | " + " | ".join(f"{c}: median | range" for c in columns) + " |")
    print("| --- |" + " ---: | ---: |" * len(settings))
    for name in runs[settings[0]][0]:
        print(f"| {name} | " + " | ".join(spread([run[name] for run in runs[s]]) for s in settings) + " |")
    base = runs[settings[0]]
    for setting in settings[1:]:
        engine = f"engine (Bernoulli, batch {args.batch_size}), frames/s"
        ratios = [b[engine] / a[engine] for a, b in zip(base, runs[setting])]
        print(f"\nengine frames/s, {columns[settings.index(setting)]} over {columns[0]}, paired by repeat: "
              f"{spread(ratios)}")
    if args.eval_pieces:
        print(f"\nrecipe evaluation (bench_eval.py --dataset {args.dataset} --pieces {args.eval_pieces} "
              "--samples 10 --nade-hidden 64 --threads 1):", flush=True)
        subprocess.run([sys.executable, str(HERE / "bench_eval.py"), "--dataset", args.dataset, "--pieces",
                        str(args.eval_pieces), "--samples", "10", "--nade-hidden", "64", "--threads", "1"],
                       check=True)
    if args.flops_pieces:
        print(f"\narithmetic per training frame (bench_flops.py --dataset {args.dataset} --max-pieces "
              f"{args.flops_pieces}):", flush=True)
        subprocess.run([sys.executable, str(HERE / "bench_flops.py"), "--dataset", args.dataset, "--max-pieces",
                        str(args.flops_pieces)], check=True)
    print(f"\nafter: {uptime()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
