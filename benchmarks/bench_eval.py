"""Evaluation cost of the sampling recipe: peak memory, CPU time in user and kernel mode, frames per second.

Scores the first ``--pieces`` validation pieces with a randomly initialised recipe network (NADE 150 units,
chord vocabulary 512, copy window 32 by default) through :func:`lapmusic.training.epoch.evaluate_tensors`, in
this process (run it alone: the peak resident memory is the process's, imports included).

    LAPMUSIC_DATA_DIR=/path/to/datasets python benchmarks/bench_eval.py --dataset nottingham --pieces 64 --samples 10
"""

from __future__ import annotations

import argparse
import resource
import time

import torch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="nottingham")
    parser.add_argument("--pieces", type=int, default=64, help="first N validation pieces (default 64)")
    parser.add_argument("--samples", type=int, default=10, help="sampled frames per frame (test: 10, epochs: 2)")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--nade-hidden", type=int, default=150)
    parser.add_argument("--nade-vocab", type=int, default=512)
    parser.add_argument("--window", type=int, default=32, help="copy window (default 32)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from lapmusic.data.registry import load_dataset
    from lapmusic.model.config import ModelConfig
    from lapmusic.model.rnn import PianoRollRNN
    from lapmusic.training.epoch import EVAL_FRAMES, _to_tensors, evaluate_tensors

    dataset = load_dataset(args.dataset)
    torch.manual_seed(0)
    model = PianoRollRNN.from_config(ModelConfig(args.hidden, output="nade", nade_hidden=args.nade_hidden,
                                                 nade_vocab=args.nade_vocab, nade_repeat=True,
                                                 nade_repeat_window=args.window))
    model.head.prepare(dataset.train)
    pieces = _to_tensors(dataset.valid[: args.pieces], torch.device("cpu"))
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    result = evaluate_tensors(model, pieces, 64, acc_samples=args.samples)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    print(f"{args.dataset}: {len(pieces)} validation pieces, {result['frames']} frames, {args.samples} samples, "
          f"chunks of {EVAL_FRAMES} frames, {args.threads} thread(s)")
    print(f"NLL {result['nll']:.4f}  ACC {result['acc']:.2f}  expected ACC {result['expected_acc']:.2f}")
    print(f"wall {wall:.1f} s, CPU {user:.1f} s user + {system:.1f} s system "
          f"({100 * system / max(user + system, 1e-9):.0f}% in the kernel), "
          f"{result['frames'] / max(user + system, 1e-9):,.0f} frames per CPU second, "
          f"peak resident {after.ru_maxrss / 2**20:.2f} GiB, {after.ru_minflt - before.ru_minflt:,} minor page faults")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
