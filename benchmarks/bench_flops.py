"""Arithmetic per training frame of each output layer, counted by torch.profiler: what bounds the sampling
recipe's frames/s against the Bernoulli output's.

    LAPMUSIC_DATA_DIR=/path/to/datasets python benchmarks/bench_flops.py [--dataset jsb] [--max-pieces N]

One training epoch per setting on the training split (batch 8, BPTT 100, 128 state units: bench_table.py's
recipe row), under ``torch.profiler`` with ``with_flops=True``, which counts the floating-point operations of
the matrix products (``mm``, ``addmm``, ``bmm``; 2 per multiply-add), forward and backward. Those are nearly all
of the arithmetic; elementwise work (sigmoids, the log-softmax, Adam) is not counted. The recurrent layer runs
as ``torch.nn.RNN`` here: lapmusic's hand-written steps do the same products in place (``addmm_``), which the
profiler does not count. At equal speed per FLOP, frames/s go as the inverse of these counts, so the last
column is the frames/s ratio to the Bernoulli output that arithmetic alone allows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lapmusic.model.config import ModelConfig  # noqa: E402
from lapmusic.model.rnn import PianoRollRNN  # noqa: E402
from lapmusic.training.config import TrainConfig  # noqa: E402
from lapmusic.training.epoch import _to_tensors, train_epoch  # noqa: E402
from lapmusic.training.optim import make_optimizer  # noqa: E402

SETTINGS = {  # name -> ModelConfig keywords besides the 128 state units
    "Bernoulli output": {},
    "NADE, 64 units": {"output": "nade", "nade_hidden": 64},
    "NADE 64 + chord vocabulary 512": {"output": "nade", "nade_hidden": 64, "nade_vocab": 512},
    "NADE 64 + copy window 32": {"output": "nade", "nade_hidden": 64, "nade_repeat": True, "nade_repeat_window": 32},
    "the recipe (NADE 64, vocabulary 512, window 32)": {"output": "nade", "nade_hidden": 64, "nade_vocab": 512,
                                                        "nade_repeat": True, "nade_repeat_window": 32},
    "the recipe with 150 NADE units": {"output": "nade", "nade_hidden": 150, "nade_vocab": 512, "nade_repeat": True,
                                       "nade_repeat_window": 32},
}


def flops_per_frame(pieces: list[np.ndarray], hidden: int = 128, batch_size: int = 8, **model) -> float:
    """FLOPs of the matrix products per training frame of one epoch over ``pieces`` (forward and backward)."""
    torch.manual_seed(0)
    config = ModelConfig(hidden, **model)
    network = PianoRollRNN.from_config(config)
    network.hand_written_steps = False  # torch.nn.RNN's products are counted, the in-place ones are not
    network.head.prepare(pieces)
    optimizer = make_optimizer(network, TrainConfig(model=config))
    tensors = _to_tensors(pieces, torch.device("cpu"))
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        result = train_epoch(network, optimizer, tensors, batch_size=batch_size, bptt=100, clip=1.0,
                             rng=np.random.default_rng(0))
    return sum(event.flops for event in prof.key_averages()) / result["frames"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="jsb", help="dataset key (needs LAPMUSIC_DATA_DIR or the cache)")
    parser.add_argument("--max-pieces", type=int, default=None, help="use only the first N training pieces")
    parser.add_argument("--json-out", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from lapmusic.data.registry import load_dataset

    pieces = list(load_dataset(args.dataset).train)[: args.max_pieces]
    counts = {name: flops_per_frame(pieces, **model) for name, model in SETTINGS.items()}
    base = counts["Bernoulli output"]
    print(f"{args.dataset} training split, {len(pieces)} pieces, one epoch per setting, batch 8, 128 state units; "
          f"FLOPs of the matrix products per frame, forward and backward\n")
    print("| setting | kFLOP per frame | over the Bernoulli output | frames/s ratio arithmetic allows |")
    print("| --- | ---: | ---: | ---: |")
    for name, value in counts.items():
        print(f"| {name} | {value / 1e3:,.0f} | {value / base:.2f} | {base / value:.2f} |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"dataset": args.dataset, "pieces": len(pieces),
                                                   "flops_per_frame": counts}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
