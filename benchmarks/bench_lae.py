"""Benchmark of the LAE solvers: exact (dense SVD of Xi) vs approx (block Krylov SVD, FFT products), and with
``--weighted`` the training run's lag-weighted LAE: gram (eigenvectors of Xi^T Xi) vs approx vs exact.

Every case runs in its own subprocess so that its peak memory (``ru_maxrss``: the whole process,
interpreter, torch and the loaded dataset included) is measured alone. A ``load only`` row per
dataset gives that fixed part, to subtract by eye.

Prints one table:

* JSB Chorales: growing training subsets and the full training set, exact vs approx at
  p = 64, 128, 256: seconds, peak memory, the largest relative error of the top-p singular values
  (approx against exact, same run), energy captured, and the speed-up exact / approx;
* Nottingham and MuseData (full training sets): approx alone at p = 64, 128, 256 (Xi would need
  hundreds of GB, so exact refuses).

With ``--weighted`` it prints another table instead: the LAE a training run fits (lag weighting
``--decay``, default 0.3, prefixes cut where ``decay**L < 1e-12``: 23 lags at 0.3) on each of ``--datasets``,
p from ``--hidden``; per dataset the first ``--exact-pieces`` training pieces (default 100) with exact, gram
and approx, then the full training set with gram and approx. Beside seconds and peak memory: the kernel's
share of the CPU time, the minor page faults, and the agreement ``max_i |sigma_i - sigma_i(ref)| / sigma_1``
over the top p, against exact where it ran, else against gram.

Usage::

    LAPMUSIC_DATA_DIR=/path/to/datasets python benchmarks/bench_lae.py            # everything
    LAPMUSIC_DATA_DIR=... python benchmarks/bench_lae.py --quick                  # no full-JSB exact SVD
    LAPMUSIC_DATA_DIR=... python benchmarks/bench_lae.py --approx-only            # no exact SVD at all
    LAPMUSIC_DATA_DIR=... python benchmarks/bench_lae.py --json out.json          # also save the rows
    LAPMUSIC_DATA_DIR=... python benchmarks/bench_lae.py --threads 1              # one torch/BLAS thread
    LAPMUSIC_DATA_DIR=... python benchmarks/bench_lae.py --weighted --datasets nottingham --hidden 128 --threads 1
    LAPMUSIC_DATA_DIR=... python benchmarks/bench_lae.py --approx-only --device cuda --datasets jsb,nottingham \
        --jsb-subsets none --hidden 64,256                                          # the GPU rows of gpu_check.sh
    python benchmarks/bench_lae.py --synthetic ...                                  # no data: random JSB-shaped pieces

Besides wall seconds (the clock around ``fit_lae``) every row gives the CPU seconds the process spent in
that time (user + system, all threads): on a shared machine, wall time grows with the load while CPU
seconds mostly do not; CPU seconds above the wall seconds mean several threads were busy.

Targets: full Nottingham at p = 256 under 60 s with peak memory under 4 GB on 2 CPU
cores; on full JSB approx at least 50x faster than exact with the top-p singular values within 1 %.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HIDDEN = (64, 128, 256)
JSB_SUBSETS = (25, 50, 100)


def run_case(case: dict) -> dict:
    """Run one case in a fresh interpreter; returns its JSON result (or an error row)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        command = [sys.executable, __file__, "--case", json.dumps(case), "--case-out", str(out)]
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0 or not out.is_file():
            tail = (completed.stderr or completed.stdout).strip().splitlines()[-1:] or ["no output"]
            return {**case, "error": tail[0]}
        return {**case, **json.loads(out.read_text())}


def synthetic_train(n: int = 229, low: int = 50, high: int = 130, seed: int = 0):
    """Random pieces shaped like JSB's training split (note density 4 %), for machines without the data."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [(rng.random((int(rng.integers(low, high + 1)), 88)) < 0.04).astype(np.uint8) for _ in range(n)]


def child(case: dict, out_path: str) -> None:
    import resource

    import numpy as np  # noqa: F401
    import scipy.linalg  # noqa: F401  (imported before the clock starts, like torch: not solver time)
    import torch

    from lapmusic.lae.fit import fit_lae

    if case.get("threads"):
        torch.set_num_threads(case["threads"])
    device = case.get("device", "auto")
    if device.startswith("cuda"):
        torch.zeros(1, device=device)  # start CUDA before the clock: its set-up is not solver time
        torch.cuda.synchronize()
    if case["dataset"] == "synthetic":
        train = synthetic_train()
    else:
        from lapmusic.data.registry import load_dataset

        train = load_dataset(case["dataset"]).train
    pieces = train[: case["pieces"]] if case.get("pieces") else train
    result: dict = {"n_pieces": len(pieces), "frames": int(sum(len(x) for x in pieces))}
    if case["solver"] != "load":
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_before = usage.ru_utime + usage.ru_stime
        started = time.perf_counter()
        faults_before, system_before = usage.ru_minflt, usage.ru_stime
        model = fit_lae(pieces, case["p"], solver=case["solver"], device=device, decay=case.get("decay"),
                        max_lag=case.get("max_lag"))
        seconds = time.perf_counter() - started
        usage = resource.getrusage(resource.RUSAGE_SELF)
        result.update(
            seconds=seconds,
            cpu_seconds=usage.ru_utime + usage.ru_stime - cpu_before,
            system_seconds=usage.ru_stime - system_before,
            minor_faults=usage.ru_minflt - faults_before,
            solver_ran=model.solver,
            device=model.device,
            rows=model.rows,
            columns=model.columns,
            energy=model.energy_captured,
            iterations=model.iterations,
            singular_values=model.singular_values[: max(HIDDEN)].tolist(),
        )
    result["peak_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    Path(out_path).write_text(json.dumps(result))


def relative_error(approx: list[float], exact: list[float], p: int) -> float:
    import numpy as np

    a, e = np.asarray(approx[:p]), np.asarray(exact[:p])
    return float(np.max(np.abs(a - e) / e))


def weighted_table(datasets, hidden, decay: float, exact_pieces: int, common: dict, show) -> None:
    """The ``--weighted`` table: the training run's lag-weighted LAE by every solver (module docstring)."""
    import math

    import numpy as np

    lags = max(1, math.ceil(math.log(1e-12) / math.log(decay))) if decay < 1 else None  # as pretrain.lae_lags
    print(f"{'case':<34}{'solver':<13}{'p':>5}{'seconds':>9}{'CPU s':>8}{'kernel %':>9}{'minor faults':>13}"
          f"{'peak MiB':>9}{'energy %':>9}{'agreement':>11}  reference")
    for key in datasets:
        for pieces, label in ((exact_pieces, f"{key} first {exact_pieces}"), (None, f"{key} full train")):
            show(run_case({"label": f"{label} (load only)", "dataset": key, "pieces": pieces, "solver": "load"}),
                 weighted=True)
            for p in hidden:
                rows = {}
                for solver in (("exact",) if pieces else ()) + ("gram", "approx"):
                    rows[solver] = run_case({"label": label, "dataset": key, "pieces": pieces, "solver": solver,
                                             "p": p, "decay": decay, "max_lag": lags, **common})
                reference = "exact" if "exact" in rows and "error" not in rows["exact"] else "gram"
                ref = rows[reference]
                for solver, row in rows.items():
                    if solver != reference and "error" not in row and "error" not in ref:
                        ours, theirs = np.asarray(row["singular_values"][:p]), np.asarray(ref["singular_values"][:p])
                        row["agreement"] = float(np.max(np.abs(ours - theirs)) / theirs[0])
                        row["reference"] = reference
                    show(row, weighted=True)


def fmt_weighted(row: dict) -> str:
    if "error" in row:
        return f"{row['label']:<34}{row['solver']:<13}{row.get('p', '-')!s:>5}  error: {row['error']}"
    if "seconds" not in row:
        return f"{row['label']:<34}{'load':<13}{'-':>5}{'-':>9}{'-':>8}{'-':>9}{'-':>13}{row['peak_bytes'] / 2**20:9.0f}"
    agreement = f"{row['agreement']:11.1e}  {row['reference']}" if "agreement" in row else f"{'-':>11}"
    kernel = 100 * row["system_seconds"] / max(row["cpu_seconds"], 1e-9)
    return (f"{row['label']:<34}{row['solver'] + '/' + row['device']:<13}{row['p']:>5}{row['seconds']:9.2f}"
            f"{row['cpu_seconds']:8.1f}{kernel:9.1f}{row['minor_faults']:13,}{row['peak_bytes'] / 2**20:9.0f}"
            f"{100 * row['energy']:9.2f}{agreement}")


def fmt_row(row: dict) -> str:
    if "error" in row:
        return f"{row['label']:<32}{row['solver']:<8}{row.get('p', '-')!s:>5}  error: {row['error']}"
    seconds = f"{row['seconds']:10.2f}" if "seconds" in row else f"{'-':>10}"
    cpu = f"{row['cpu_seconds']:8.1f}" if "cpu_seconds" in row else f"{'-':>8}"
    energy = f"{100 * row['energy']:10.1f}" if "energy" in row else f"{'-':>10}"
    err = f"{row['rel_err']:11.1e}" if row.get("rel_err") is not None else f"{'-':>11}"
    speed = f"{row['speedup']:9.0f}x" if row.get("speedup") else f"{'-':>10}"
    shape = f"{row['frames']}x{row['columns']}" if "columns" in row else f"{row['frames']} frames"
    solver = f"{row['solver']}/{row['device']}" if "device" in row else row["solver"]
    return (f"{row['label']:<32}{solver:<12}{row.get('p', '-')!s:>5}{shape:>17}{seconds}{cpu}"
            f"{row['peak_bytes'] / 2**20:10.0f}{energy}{err}{speed}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="skip the exact SVD of the full JSB set")
    parser.add_argument("--approx-only", action="store_true", help="skip every exact SVD (approx rows only)")
    parser.add_argument("--json", help="also write every row to this JSON file")
    parser.add_argument("--device", default="auto",
                        help="device of the approx solver: auto (CUDA when present), cpu or cuda (default auto); "
                        "exact always runs on the CPU")
    parser.add_argument("--threads", type=int, help="torch threads in every case (default: torch's own)")
    parser.add_argument("--datasets", default="jsb,nottingham,musedata",
                        help="comma-separated, from jsb, nottingham, musedata (default all three)")
    parser.add_argument("--jsb-subsets", default=",".join(map(str, JSB_SUBSETS)),
                        help="JSB training subsets (first N pieces) measured before the full set, or 'none' "
                        "(default %(default)s)")
    parser.add_argument("--hidden", default=",".join(map(str, HIDDEN)),
                        help="values of p, comma-separated (default %(default)s)")
    parser.add_argument("--synthetic", action="store_true",
                        help="random JSB-shaped pieces (229, 50-130 frames) instead of JSB; no data needed")
    parser.add_argument("--weighted", action="store_true",
                        help="the training run's lag-weighted LAE instead: exact, gram and approx side by side "
                        "(datasets from --datasets, p from --hidden)")
    parser.add_argument("--decay", type=float, default=0.3, help="lag weighting of --weighted (default 0.3)")
    parser.add_argument("--exact-pieces", type=int, default=100,
                        help="--weighted: the subset (first N training pieces) on which exact also runs (default 100)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--case-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        child(json.loads(args.case), args.case_out)
        return 0
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)  # numpy/scipy too
    hidden = tuple(int(p) for p in args.hidden.split(","))
    subsets = () if args.jsb_subsets in ("", "none") else tuple(int(n) for n in args.jsb_subsets.split(","))
    datasets = args.datasets.split(",")
    common = {"device": args.device, "threads": args.threads}
    if not args.synthetic and not os.environ.get("LAPMUSIC_DATA_DIR"):
        print("set LAPMUSIC_DATA_DIR to the folder holding JSB_Chorales.mat, Nottingham.mat, MuseData.mat",
              file=sys.stderr)
        return 2

    rows = []

    def show(row, weighted=False):
        rows.append(row)
        print(fmt_weighted(row) if weighted else fmt_row(row), flush=True)

    started = time.time()
    if args.weighted:
        weighted_table(datasets, hidden, args.decay, args.exact_pieces, common, show)
        datasets = []  # the unweighted table is not printed
    else:
        print(f"{'case':<32}{'solver':<12}{'p':>5}{'Xi rows x cols':>17}{'seconds':>10}{'CPU s':>8}{'peak MiB':>10}"
              f"{'energy %':>10}{'top-p err':>11}{'speed-up':>10}")
    load = 1.0  # a rough contention indicator, printed with the table
    jsb = "synthetic" if args.synthetic else "jsb"
    name = "synthetic" if args.synthetic else "JSB"
    jsb_cases = [(n, f"{name} first {n}") for n in subsets] + [(None, f"{name} full train")]
    for pieces, label in jsb_cases if "jsb" in datasets else []:
        show(run_case({"label": f"{label} (load only)", "dataset": jsb, "pieces": pieces, "solver": "load"}))
        exact = None
        if not args.approx_only and (pieces is not None or not args.quick):
            exact = run_case({"label": label, "dataset": jsb, "pieces": pieces, "solver": "exact",
                              "p": max(hidden), **common})
            show(exact)
        for p in hidden:
            row = run_case({"label": label, "dataset": jsb, "pieces": pieces, "solver": "approx", "p": p,
                            **common})
            if exact and "error" not in exact and "error" not in row:
                row["rel_err"] = relative_error(row["singular_values"], exact["singular_values"], p)
                row["speedup"] = exact["seconds"] / row["seconds"]
            show(row)
    for key, label in (("nottingham", "Nottingham full train"), ("musedata", "MuseData full train")):
        if key not in datasets or args.synthetic:
            continue
        show(run_case({"label": f"{label} (load only)", "dataset": key, "solver": "load"}))
        for p in hidden:
            show(run_case({"label": label, "dataset": key, "solver": "approx", "p": p, **common}))
    load = os.getloadavg()
    print(f"\n{time.time() - started:.0f} s in all; load average at the end {load[0]:.1f} / {load[1]:.1f} / "
          f"{load[2]:.1f} on {os.cpu_count()} CPUs (above {os.cpu_count()} means the timings were contended)")
    if args.json:
        for row in rows:
            row.pop("singular_values", None)
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
