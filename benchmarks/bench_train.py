"""Training throughput: lapmusic's batching vs the batch-of-one loop of reference implementations.

Both use the same network, the same pieces and the same code path (``lapmusic.training.epoch.train_epoch``):

- **reference loop**: one piece per optimizer step, back-propagation through the whole piece, the recurrent
  layer run by ``torch.nn.RNN`` (what most reference RNN-on-piano-roll code does);
- **batch of one**: the same loop with lapmusic's hand-written tanh steps (``lapmusic.model.elman``), so that
  the ratio of the next row to it is the gain of the batching alone;
- **lapmusic**: pieces bucketed by length into mini-batches, padded and masked, truncated BPTT windows.

Figures are frames per second of a training epoch (predicted frames / wall seconds), measured in one run
on one machine with the two settings interleaved epoch by epoch (each round: one baseline epoch, then
batched epochs for about as long), so that a change of machine load hits both alike. With CUDA available the same runs are repeated on
the GPU.

    LAPMUSIC_DATA_DIR=/path/to/datasets python benchmarks/bench_train.py --dataset jsb --hidden 128
    python benchmarks/bench_train.py --synthetic            # no data needed

``--output nade`` adds a second comparison: the NADE output layer (lapmusic/model/nade.py) against the Bernoulli
output, both with lapmusic's batching, interleaved epoch by epoch the same way; the figure is NADE's
frames/s over Bernoulli's (the target is at least 1/4).

    python benchmarks/bench_train.py --dataset jsb --output nade --batch-size 4 --threads 1

CPU runs use the threads training would use: ``--threads 2`` on the engine's small products becomes one thread
(lapmusic.core.device.engine_threads); ``--no-thread-cap`` measures the threads as asked.
``benchmarks/bench_table.py`` (``make bench``) runs this per thread count and repeat and prints the table.

Prints a table and, with ``--json-out FILE``, writes the figures as JSON (with the peak resident memory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time

import numpy as np
import torch

from lapmusic.core.device import engine_threads
from lapmusic.model.config import ModelConfig
from lapmusic.model.rnn import PianoRollRNN
from lapmusic.training.epoch import _to_tensors, train_epoch


def synthetic_pieces(n: int, low: int, high: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    pieces = []
    for _ in range(n):
        roll = (rng.random((int(rng.integers(low, high + 1)), 88)) < 0.04).astype(np.uint8)
        pieces.append(roll)
    return pieces


class Setting:
    """A network + optimizer trained with one batching setting; ``epoch()`` times one epoch."""

    def __init__(self, name, tensors, device, hidden, batch_size, bptt, seed=0, output="bernoulli",
                 nade_hidden=64, pieces=None, nade_vocab=0, nade_repeat_window=0, torch_rnn=False, nade_vocab_rank=0):
        torch.manual_seed(seed)
        self.name, self.tensors, self.device = name, tensors, device
        self.batch_size, self.bptt = batch_size, bptt
        self.model = PianoRollRNN.from_config(ModelConfig(hidden, output=output, nade_hidden=nade_hidden,
                                                          nade_vocab=nade_vocab, nade_vocab_rank=nade_vocab_rank,
                                                          nade_repeat=nade_repeat_window > 0,
                                                          nade_repeat_window=max(1, nade_repeat_window))).to(device)
        self.model.hand_written_steps = not torch_rnn
        self.model.head.prepare(pieces)  # as train.py does: the chord vocabulary, the copy gate's start
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.frames = self.steps = self.epochs = 0
        self.seconds = self.cpu_seconds = 0.0
        # Warm-up on a few pieces (allocator, kernels) so that the first epoch is not charged for it.
        self._run(tensors[: max(batch_size, 2)], 0)

    def _run(self, tensors, epoch):
        return train_epoch(self.model, self.optimizer, tensors, batch_size=self.batch_size, bptt=self.bptt,
                           clip=1.0, rng=np.random.default_rng(epoch))

    def epoch(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        started, cpu_started = time.perf_counter(), time.process_time()
        result = self._run(self.tensors, self.epochs)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - started
        self.cpu_seconds += time.process_time() - cpu_started  # all threads of this process
        self.frames += result["frames"]
        self.steps += result["steps"]
        self.epochs += 1

    def row(self) -> dict:
        return {"frames_per_second": self.frames / self.seconds, "epochs": self.epochs, "seconds": self.seconds,
                "cpu_seconds": self.cpu_seconds, "frames_per_cpu_second": self.frames / max(self.cpu_seconds, 1e-9),
                "steps": self.steps, "frames": self.frames}


def measure_batching(pieces, device, hidden, batch_size, bptt, seconds) -> tuple[dict | None, dict, dict]:
    """The reference loop, the batch of one and the engine, interleaved epoch by epoch (so a change in machine
    load hits all alike). On CUDA both loops run cuDNN, so the reference loop is not timed there (``None``)."""
    tensors = _to_tensors(pieces, device)
    reference = (Setting("reference", tensors, device, hidden, batch_size=1, bptt=10**9, torch_rnn=True)
                 if device.type == "cpu" else None)
    one = Setting("one", tensors, device, hidden, batch_size=1, bptt=10**9)
    ours = Setting("ours", tensors, device, hidden, batch_size=batch_size, bptt=bptt)
    while True:
        if reference is not None:
            reference.epoch()
        one.epoch()
        target = one.seconds  # give the batched setting about as much time as the baseline in every round
        while ours.seconds < target:
            ours.epoch()
        if one.epochs >= 2 and one.seconds + ours.seconds >= 2 * seconds:
            break
    return reference and reference.row(), one.row(), ours.row()


def measure_outputs(pieces, device, hidden, batch_size, bptt, seconds, nade_hidden, nade_vocab=0,
                    nade_repeat_window=0, nade_vocab_rank=0) -> tuple[dict, dict]:
    """Bernoulli vs NADE output, same batching, interleaved epoch by epoch (NADE gets about as much time)."""
    tensors = _to_tensors(pieces, device)
    bernoulli = Setting("bernoulli", tensors, device, hidden, batch_size=batch_size, bptt=bptt)
    nade = Setting("nade", tensors, device, hidden, batch_size=batch_size, bptt=bptt, output="nade",
                   nade_hidden=nade_hidden, pieces=pieces, nade_vocab=nade_vocab,
                   nade_repeat_window=nade_repeat_window, nade_vocab_rank=nade_vocab_rank)
    while True:
        nade.epoch()
        while bernoulli.seconds < nade.seconds:
            bernoulli.epoch()
        if nade.epochs >= 2 and nade.seconds + bernoulli.seconds >= 2 * seconds:
            break
    return bernoulli.row(), nade.row()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="jsb", help="dataset key (needs LAPMUSIC_DATA_DIR or the cache)")
    parser.add_argument("--synthetic", action="store_true", help="use random pieces shaped like JSB instead")
    parser.add_argument("--max-pieces", type=int, default=None, help="use only the first N training pieces")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bptt", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="minimum measuring time per setting (at least two baseline epochs are timed)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-thread-cap", action="store_true",
                        help="use --threads as given; by default the CPU runs are capped as training caps them "
                        "(lapmusic.core.device.engine_threads: one thread for small products)")
    parser.add_argument("--devices", default="auto", help="auto (cpu, plus cuda when present), cpu or cuda")
    parser.add_argument("--output", choices=["bernoulli", "nade"], default="bernoulli",
                        help="nade: also time the NADE output against the Bernoulli one (default bernoulli: "
                        "batching comparison only)")
    parser.add_argument("--nade-hidden", type=int, default=64, help="NADE hidden units (default 64)")
    parser.add_argument("--nade-vocab", type=int, default=0,
                        help="with --output nade: a chord vocabulary of N chords (default 0: none)")
    parser.add_argument("--nade-vocab-rank", type=int, default=0,
                        help="with --nade-vocab: the chord logits through R units (default 0: full rank)")
    parser.add_argument("--nade-repeat-window", type=int, default=0,
                        help="with --output nade: the repeat component with a copy window of L frames (default 0: "
                        "none); JSB's sampling recipe is --nade-vocab 512 --nade-repeat-window 32")
    parser.add_argument("--skip-batching", action="store_true",
                        help="with --output nade: skip the batch-of-one comparison")
    parser.add_argument("--json-out", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    requested = torch.get_num_threads()
    if args.synthetic:
        pieces, source = synthetic_pieces(229, 50, 130), "synthetic (229 pieces of 50-130 frames)"
    else:
        from lapmusic.data.registry import load_dataset

        pieces, source = list(load_dataset(args.dataset).train), f"{args.dataset} training split"
    if args.max_pieces:
        pieces = pieces[: args.max_pieces]
        source += f", first {len(pieces)} pieces"
    if args.devices == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [args.devices]

    lengths = [len(p) for p in pieces]
    print(f"data: {source}: {len(pieces)} pieces, {sum(lengths)} frames (median {int(np.median(lengths))}, "
          f"max {max(lengths)}); hidden {args.hidden}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads; {platform.processor() or platform.machine()}", flush=True)
    rows = []
    for name in devices:
        device = torch.device(name)
        label = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
        threads_used = (torch.get_num_threads() if args.no_thread_cap
                        else engine_threads(device, args.hidden, args.batch_size))
        if device.type == "cpu":
            print(f"  cpu: {threads_used} torch thread(s) used", flush=True)
        if not (args.output == "nade" and args.skip_batching):
            reference, one, ours = measure_batching(pieces, device, args.hidden, args.batch_size, args.bptt,
                                                    args.seconds)
            if reference is not None:
                rows.append({"device": label, "setting": "reference loop (torch.nn.RNN, 1 piece/step, full BPTT)",
                             **reference})
                ours["speedup_reference"] = ours["frames_per_second"] / reference["frames_per_second"]
            rows.append({"device": label, "setting": "batch of one (lapmusic's steps on the CPU, 1 piece/step, "
                         "full BPTT)", **one})
            print(f"  {label}: batch of one {one['frames_per_second']:,.0f} frames/s", flush=True)
            ours["speedup"] = ours["frames_per_second"] / one["frames_per_second"]
            rows.append({"device": label, "setting": f"lapmusic (batch {args.batch_size}, bptt {args.bptt})",
                         **ours})
            print(f"  {label}: lapmusic {ours['frames_per_second']:,.0f} frames/s", flush=True)
        if args.output == "nade":
            bern, nade = measure_outputs(pieces, device, args.hidden, args.batch_size, args.bptt, args.seconds,
                                         args.nade_hidden, args.nade_vocab, args.nade_repeat_window,
                                         args.nade_vocab_rank)
            bern["speedup"] = 1.0
            rows.append({"device": label, "setting": f"Bernoulli output (batch {args.batch_size}) [NADE baseline]",
                         **bern})
            nade["speedup"] = nade["frames_per_second"] / bern["frames_per_second"]
            extras = (f", vocab {args.nade_vocab}" if args.nade_vocab else "") + (
                f" at rank {args.nade_vocab_rank}" if args.nade_vocab_rank else "") + (
                f", copy window {args.nade_repeat_window}" if args.nade_repeat_window else "")
            rows.append({"device": label, "setting": f"NADE output, {args.nade_hidden} units{extras} (batch "
                         f"{args.batch_size}), vs Bernoulli", **nade})
            print(f"  {label}: Bernoulli {bern['frames_per_second']:,.0f} frames/s, NADE "
                  f"{nade['frames_per_second']:,.0f} frames/s ({nade['speedup']:.2f} x)", flush=True)

    print()
    # frames per CPU second: on a shared machine wall time grows with the load, CPU time much less.
    print("| device | setting | frames/s | frames per CPU s | epochs timed | optimizer steps | speed-up |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        speedup = f"{row['speedup']:.1f} x" if "speedup" in row else "1.0 x (baseline)"
        if "speedup_reference" in row:
            speedup += f" ({row['speedup_reference']:.1f} x the reference loop)"
        print(f"| {row['device']} | {row['setting']} | {row['frames_per_second']:,.0f} | "
              f"{row['frames_per_cpu_second']:,.0f} | {row['epochs']} | {row['steps']} | {speedup} |")
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} CPUs")
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump({"source": source, "hidden": args.hidden, "threads": args.threads or requested,
                       "threads_used": threads_used, "torch": torch.__version__, "load": list(load),
                       "peak_resident_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                       "rows": rows}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
