"""cuDNN float32 precision on a GPU: TF32 (torch's default for RNNs) against IEEE float32 (lapmusic's choice).

lapmusic switches cuDNN to IEEE float32 on CUDA (``lapmusic.core.device.ieee_fp32_on_cuda``) so that a GPU run
follows the CPU run to float32 rounding. This measures what that costs: training epochs of the same network
on the same pieces (``lapmusic.training.epoch.train_epoch``), the two precisions interleaved epoch by epoch so that a
change of load hits both alike; the figure is IEEE's frames/s over TF32's. Needs a CUDA GPU.

    LAPMUSIC_DATA_DIR=/path/to/datasets python benchmarks/bench_precision.py --dataset jsb --seconds 8
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from lapmusic.data.registry import load_dataset
from lapmusic.model.config import ModelConfig
from lapmusic.model.rnn import PianoRollRNN
from lapmusic.training.epoch import _to_tensors, train_epoch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="jsb", help="dataset key (default jsb)")
    parser.add_argument("--hidden", default="128,512", help="comma-separated hidden sizes (default 128,512)")
    parser.add_argument("--batch-sizes", default="8,32", help="comma-separated batch sizes (default 8,32)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per setting (default 8)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_precision needs a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    pieces = _to_tensors(load_dataset(args.dataset).train, device)
    frames = sum(len(p) - 1 for p in pieces)
    print(f"{args.dataset}: {len(pieces)} training pieces, {frames} predicted frames; {torch.cuda.get_device_name()}, "
          f"torch {torch.__version__}")
    print("| hidden | batch | TF32 frames/s | IEEE frames/s | IEEE / TF32 |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for hidden in (int(h) for h in args.hidden.split(",")):
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            models = {}
            for name in ("tf32", "ieee"):
                torch.manual_seed(0)
                model = PianoRollRNN.from_config(ModelConfig(hidden)).to(device)
                models[name] = (model, torch.optim.Adam(model.parameters(), lr=1e-3))
            spent = {"tf32": 0.0, "ieee": 0.0}
            done = {"tf32": 0, "ieee": 0}
            rng = np.random.default_rng(0)
            warm = True
            while warm or min(spent.values()) < args.seconds:
                for name, (model, optimizer) in models.items():
                    torch.backends.cudnn.allow_tf32 = name == "tf32"
                    torch.cuda.synchronize()
                    started = time.perf_counter()
                    train_epoch(model, optimizer, pieces, batch_size=batch, bptt=100, clip=1.0, rng=rng)
                    torch.cuda.synchronize()
                    if not warm:  # the first epoch of each (cuDNN plans, allocator) is not timed
                        spent[name] += time.perf_counter() - started
                        done[name] += frames
                warm = False
            tf32, ieee = done["tf32"] / spent["tf32"], done["ieee"] / spent["ieee"]
            print(f"| {hidden} | {batch} | {tf32:,.0f} | {ieee:,.0f} | {ieee / tf32:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
