"""Training throughput: lapmusic's batching vs the batch-of-one loop of reference implementations.

Both use the same network, the same pieces and the same code path (``lapmusic.train.train_epoch``):

- **batch of one**: one piece per optimizer step, back-propagation through the whole piece (what most
  reference RNN-on-piano-roll code does);
- **lapmusic**: pieces bucketed by length into mini-batches, padded and masked, truncated BPTT windows.

Figures are frames per second of a training epoch (predicted frames / wall seconds), measured in one run
on one machine, so the ratio compares like with like. With CUDA available the same runs are repeated on
the GPU.

    LAPMUSIC_DATA_DIR=/path/to/datasets python benchmarks/bench_train.py --dataset jsb --hidden 128
    python benchmarks/bench_train.py --synthetic            # no data needed

Prints a table and, with ``--json-out FILE``, writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np
import torch

from lapmusic.model import PianoRollRNN
from lapmusic.train import _to_tensors, train_epoch


def synthetic_pieces(n: int, low: int, high: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    pieces = []
    for _ in range(n):
        roll = (rng.random((int(rng.integers(low, high + 1)), 88)) < 0.04).astype(np.uint8)
        pieces.append(roll)
    return pieces


def measure(pieces, device, hidden: int, batch_size: int, bptt: int, seconds: float, seed: int = 0) -> dict:
    """Frames/s over whole epochs of ``pieces`` (repeated until ``seconds`` have passed, at least one)."""
    torch.manual_seed(seed)
    model = PianoRollRNN(hidden).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    tensors = _to_tensors(pieces, device)
    # Warm-up on a few pieces (allocator, kernels) so that the first epoch is not charged for it.
    train_epoch(model, optimizer, tensors[: max(batch_size, 2)], batch_size=batch_size, bptt=bptt, clip=1.0,
                rng=np.random.default_rng(0))
    frames = steps = epochs = 0
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    while True:
        result = train_epoch(model, optimizer, tensors, batch_size=batch_size, bptt=bptt, clip=1.0,
                             rng=np.random.default_rng(epochs))
        frames += result["frames"]
        steps += result["steps"]
        epochs += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            break
    return {"frames_per_second": frames / elapsed, "epochs": epochs, "seconds": elapsed, "steps": steps,
            "frames": frames}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="jsb", help="dataset key (needs LAPMUSIC_DATA_DIR or the cache)")
    parser.add_argument("--synthetic", action="store_true", help="use random pieces shaped like JSB instead")
    parser.add_argument("--max-pieces", type=int, default=None, help="use only the first N training pieces")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bptt", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0, help="minimum measuring time per setting")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--devices", default="auto", help="auto (cpu, plus cuda when present), cpu or cuda")
    parser.add_argument("--json-out", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.synthetic:
        pieces, source = synthetic_pieces(229, 50, 130), "synthetic (229 pieces of 50-130 frames)"
    else:
        from lapmusic.data import load_dataset

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
        one = measure(pieces, device, args.hidden, batch_size=1, bptt=10**9, seconds=args.seconds)
        rows.append({"device": label, "setting": "batch of one (1 piece/step, full BPTT)", **one})
        print(f"  {label}: batch of one {one['frames_per_second']:,.0f} frames/s", flush=True)
        ours = measure(pieces, device, args.hidden, batch_size=args.batch_size, bptt=args.bptt,
                       seconds=args.seconds)
        ours["speedup"] = ours["frames_per_second"] / one["frames_per_second"]
        rows.append({"device": label, "setting": f"lapmusic (batch {args.batch_size}, bptt {args.bptt})", **ours})
        print(f"  {label}: lapmusic {ours['frames_per_second']:,.0f} frames/s", flush=True)

    print()
    print(f"| device | setting | frames/s | epochs timed | optimizer steps | speed-up |")
    print(f"| --- | --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        speedup = f"{row['speedup']:.1f} x" if "speedup" in row else "1.0 x (baseline)"
        print(f"| {row['device']} | {row['setting']} | {row['frames_per_second']:,.0f} | {row['epochs']} | "
              f"{row['steps']} | {speedup} |")
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump({"source": source, "hidden": args.hidden, "threads": torch.get_num_threads(),
                       "torch": torch.__version__, "rows": rows}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
