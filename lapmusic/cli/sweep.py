"""``lapmusic sweep``: a grid of training runs in parallel, on this machine or on Ray, and one table.

A grid is a base config, axes whose values are crossed, optional variants (each one crossed with the product)
and seeds, from ``--spec FILE.json`` (``{"base": {...}, "axes": {"name": [values]}, "variants": [{...}],
"seeds": [0, 1, 2]}``, e.g. ``scripts/sweeps/``) and/or the options. Every cell x seed is one run folder
``OUT/runs/CELL_sSEED`` trained by ``python -m lapmusic.jobs.worker``; a folder that holds the finished run
with the same config is skipped, so an interrupted sweep resumes where it stopped. A failed or killed run is
retried from its checkpoint (``--retries``) and reported; it never stops the grid. The table gives, per cell,
mean ± std over seeds of the best validation NLL, its epoch, the training NLL at that epoch and the validation
NLL at epoch 0; test NLL and ACC only with ``--final`` (select on validation, report test once).

  lapmusic sweep --out /tmp/sweep --base dataset=jsb epochs=30 --axis init=lae,random --seeds 0,1 --jobs 2
  lapmusic sweep --spec grid.json --out /tmp/g --engine ray --gpus-per-run 0.08      # a local Ray, GPU shares
  lapmusic sweep --spec grid.json --out /shared/g --engine ray --address auto          # a running Ray cluster
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lapmusic.core.errors import LapMusicError


def add_sweep_parser(sub) -> None:
    """Register ``lapmusic sweep`` on the subcommand parsers ``sub``."""
    parser = sub.add_parser("sweep", help="a grid of training runs (local processes or Ray) and one table",
                            description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", help="JSON file with base, axes, variants, seeds (default: none)")
    parser.add_argument("--base", nargs="*", default=[], metavar="NAME=VALUE",
                        help="settings shared by every cell, read as JSON when they parse (default: TrainConfig's)")
    parser.add_argument("--axis", action="append", default=[], metavar="NAME=V1,V2",
                        help="an axis of the grid; repeat to cross several (default: none)")
    parser.add_argument("--variant", action="append", default=[], metavar="'NAME=V NAME=V'",
                        help="a set of settings crossed with the axes; repeat for several (default: none)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the spec's, else 0)")
    parser.add_argument("--out", required=True, help="sweep folder: run folders, shared LAEs, the table")
    parser.add_argument("--name", default="sweep", help="table file name stem under --out (default sweep)")
    parser.add_argument("--final", action="store_true", help="also report test NLL/ACC (the final table only)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: tabulate the grid's finished run folders as they are")
    parser.add_argument("--share-lae", choices=["yes", "no"], default="yes",
                        help="fit one LAE per LAE setting and share it across seeds (default yes)")
    parser.add_argument("--engine", choices=["local", "ray"], default="local",
                        help="local: worker processes on this machine; ray: one Ray task per run (default local)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (auto, HOST:6379, ray://HOST:10001); default: start a local Ray")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs at once (default: 1 locally; with Ray, as many as the cluster's resources allow)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (Ray: CPUs) per run (default 1)")
    parser.add_argument("--gpus-per-run", type=float, default=0.0,
                        help="Ray: each run's GPU share, e.g. 0.08 for twelve runs per GPU (default 0.0: CPU only)")
    parser.add_argument("--cpus", type=int, default=None,
                        help="Ray: CPUs a Ray started here offers (default: every core)")
    parser.add_argument("--retries", type=int, default=2,
                        help="further attempts for a failed, killed or signalled run, each from its checkpoint "
                             "(default 2); a run with a cancel file is not retried")
    parser.add_argument("--progress-every", type=float, default=30.0,
                        help="seconds between progress lines on stderr (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary line on stdout at the end")
    parser.set_defaults(func=run_sweep)


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _spec(args) -> tuple[dict, list]:
    from lapmusic.jobs.grid import parse_axis, parse_pairs

    spec: dict = {}
    if args.spec:
        try:
            spec = json.loads(Path(args.spec).read_text())
        except (OSError, ValueError) as exc:
            raise LapMusicError(f"cannot read the sweep spec {args.spec}: {exc}; give a JSON file like "
                                "scripts/sweeps/final_jsb.json") from None
        if not isinstance(spec, dict):
            raise LapMusicError(f"the sweep spec {args.spec} must be a JSON object with base, axes, variants, seeds")
    spec.setdefault("base", {}).update(parse_pairs(args.base))
    axes = spec.setdefault("axes", {})
    for item in args.axis:
        name, values = parse_axis(item)
        axes[name] = values
    if args.variant:
        spec["variants"] = [parse_pairs(v.split()) for v in args.variant]
    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [int(s) for s in spec.get("seeds", [0])]
    except ValueError:
        raise LapMusicError(f"--seeds takes comma-separated integers, got {args.seeds!r}") from None
    return spec, seeds


def _check_engine_options(args) -> None:
    if args.engine == "local" and (args.address or args.gpus_per_run or args.cpus):
        raise LapMusicError("--address, --gpus-per-run and --cpus are Ray's: add --engine ray")
    if args.jobs is not None and args.jobs < 1 or args.threads < 1 or args.retries < 0:
        raise LapMusicError("--jobs and --threads must be at least 1 and --retries at least 0")


def _engine(args):
    if args.engine == "ray":
        from lapmusic.jobs.rayexec import RayEngine

        return RayEngine(address=args.address, threads=args.threads, gpus_per_run=args.gpus_per_run, jobs=args.jobs,
                         cpus=args.cpus)
    from lapmusic.jobs.gridrun import LocalEngine

    return LocalEngine(args.jobs or 1, args.threads)


def run_sweep(args) -> int:
    """The body of ``lapmusic sweep``: 0 when every run finished, 1 when some failed (the table has the rest)."""
    from lapmusic.jobs.grid import cell_name, expand, lae_key
    from lapmusic.jobs.gridrun import GridRun, prepare_run, run_grid
    from lapmusic.training.config import TrainConfig

    _check_engine_options(args)
    spec, seeds = _spec(args)
    cells = expand(spec)
    for cell in cells:
        TrainConfig.from_settings(cell).validate()  # a typo fails now, not in a worker an hour later
    base, out = spec["base"], Path(args.out)
    runs: list[GridRun] = []
    lae_runs: dict[tuple, GridRun] = {}
    for cell in cells:
        name = cell_name(cell, base)
        wants_lae = args.share_lae == "yes" and cell.get("init", "lae") == "lae" and not cell.get("lae_path")
        if wants_lae and lae_key(cell) not in lae_runs:
            key = lae_key(cell)
            lae_runs[key] = GridRun(out / "lae" / (cell_name(dict(key), {}) + ".npz"), lae_settings=dict(key))
        for seed in seeds:
            config = dict(cell, seed=seed)
            if wants_lae:
                config["lae_path"] = str(lae_runs[lae_key(cell)].run_dir)
            runs.append(GridRun(out / "runs" / f"{name}_s{seed}", cell=cell, name=name, seed=seed, config=config))
    if args.report_only:
        for run in runs:
            run.outcome = "finished" if (run.run_dir / "final.json").exists() else "missing"
        return _finish(args, spec, seeds, out, runs, [])
    engine = _engine(args)
    try:
        to_fit = [run for run in lae_runs.values() if not run.run_dir.exists()]
        for run in lae_runs.values():
            run.outcome = "waiting" if run in to_fit else "finished"
        for run in to_fit:
            run.run_dir.parent.mkdir(parents=True, exist_ok=True)
        _say(f"{len(cells)} cells x {len(seeds)} seeds on engine {engine.name}; {len(to_fit)} shared LAEs to fit")
        run_grid(to_fit, engine, retries=args.retries, progress_every=args.progress_every, say=_say)
        failed_lae = {str(run.run_dir) for run in to_fit if run.outcome != "finished"}
        todo = []
        for run in runs:
            if run.config.get("lae_path") in failed_lae:  # e.g. p above the rank of a short-lag Xi: skip those cells
                run.outcome, run.error = "failed", f"its shared LAE {run.config['lae_path']} could not be fitted"
            elif prepare_run(run.config, run.run_dir):
                run.outcome = "waiting"
                todo.append(run)
            else:
                run.outcome = "finished"
        _say(f"{len(todo)} runs to train, {len(runs) - len(todo)} already finished or skipped")
        run_grid(todo, engine, retries=args.retries, progress_every=args.progress_every, say=_say)
    finally:
        engine.close()
    return _finish(args, spec, seeds, out, runs, list(lae_runs.values()))


def _finish(args, spec, seeds, out: Path, runs, lae_runs) -> int:
    from lapmusic.jobs.grid import write_table
    from lapmusic.jobs.gridrun import problems_of, summarise_finished

    out.mkdir(parents=True, exist_ok=True)
    problems = problems_of([r for r in runs + lae_runs if r.outcome != "missing"])
    text = write_table(summarise_finished(runs), spec, seeds, out, args.name, args.final, problems)
    failed = [p for p in problems if p["outcome"] != "finished"]
    retried = [p for p in problems if p["attempts"] > 1]
    if args.json:
        print(json.dumps({"table": str(out / f"{args.name}.md"), "json": str(out / f"{args.name}.json"),
                          "runs": len(runs), "failed": len(failed), "retried": len(retried)}, sort_keys=True))
    else:
        print(text, end="", flush=True)
    if failed:
        _say(f"{len(failed)} runs did not finish: see 'problems' in {out / (args.name + '.json')}")
        return 1
    return 0
