"""The musicality tables of docs/research/nade-sampling.md: samples of finished runs beside real excerpts of their dataset.

For every run folder given (e.g. those of benchmarks/nade_runs.py; the output column says ``nade+skip`` and
``nade+vocab N`` for the previous-frame skip and the chord-vocabulary mixture), draw ``--samples`` samples of ``--steps``
frames from silence at ``--temperature`` (seed 0, no polyphony cap) with :func:`lapmusic.sampling.stats_sources.sample_stats`
and print one markdown row per run, plus one row per dataset for the real excerpts (first ``--steps`` frames
of up to 200 training pieces at least ``--steps`` frames long; range = their 10th-90th percentiles).
benchmarks/nade_diagnose.py looks into why a statistic differs (teacher-forced samples, primed samples).

    LAPMUSIC_DATA_DIR=/path/to/datasets python benchmarks/nade_stats.py /tmp/nade/runs/* --json-out stats.json
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from lapmusic.sampling.stats import STATS
from lapmusic.sampling.stats_sources import sample_stats
from lapmusic.training.results import load_run

COLUMNS = ("pitch_range", "polyphony", "repeated_frames", "distinct_chords", "note_length", "key_fit", "silence")
HEADER = ("| dataset | output | init | test NLL | pitch range | polyphony | repeated frames | distinct chords / "
          "frame | note length | key fit | silence |")


def _cell(summary: dict, name: str, real: bool) -> str:
    s = summary[name]
    if s["mean"] is None:
        return "-"
    if real:
        return f"{s['p10']:.2f}-{s['p90']:.2f}"
    return f"{s['mean']:.2f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results, real_rows = [], {}
    print(HEADER)
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for path in args.runs:
        try:
            run = load_run(path, device="cpu")
        except Exception as exc:  # noqa: BLE001 - an unfinished folder is skipped, said on stderr
            print(f"skipping {path}: {exc}", file=sys.stderr)
            continue
        if run.final is None:
            print(f"skipping {path}: not finished", file=sys.stderr)
            continue
        result = sample_stats(run, n_samples=args.samples, steps=args.steps, temperature=args.temperature)
        nll = run.final.get("nll")
        row = " | ".join(_cell(result["samples"], name, False) for name in COLUMNS)
        model = run.config.model
        output = model.output + ("+skip" if model.nade_skip else "")
        output += f"+vocab {model.nade_vocab}" if model.nade_vocab else ""
        output += "+repeat" if model.nade_repeat else ""
        output += f" {model.nade_repeat_window}" if model.nade_repeat and model.nade_repeat_window > 1 else ""
        print(f"| {run.config.dataset} | {output} | {run.config.init} | {nll:.2f} | {row} |", flush=True)
        real_rows[run.config.dataset] = result["reference"]
        results.append({"run": str(path), "dataset": run.config.dataset, "output": model.output,
                        "init": run.config.init, "nll": nll, **result})
    for dataset, reference in real_rows.items():
        row = " | ".join(_cell(reference, name, True) for name in COLUMNS)
        print(f"| {dataset} | real (10-90 %) | | | {row} |")
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(results, handle, indent=1, default=str)
    assert set(COLUMNS) == set(STATS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
