"""What an epoch of the NADE recipe asks of a GPU, counted on the CPU: operators per training step and per
evaluation chunk (the recipe against the Bernoulli output), and steps and chunks per epoch of each dataset.

    python benchmarks/count_ops.py [--datasets jsb,nottingham,musedata,pianomidi] [--pieces 16]

At lapmusic's sizes a GPU is bound by kernel launches, not arithmetic, so the operator count (torch.profiler's
leaf ``aten::`` operators without the views, on ``--pieces`` training pieces of each dataset) stands in for the
kernels launched. On the CPU the recurrent layer's per-time-step operators are counted too; on CUDA that layer
is one cuDNN call, so only the difference between the two outputs carries over. The counts of steps (batch 8,
BPTT 100) and of evaluation chunks (``lapmusic.training.epoch.EVAL_FRAMES`` frames at most, batch 8) follow
the training and evaluation loops over the complete splits. Used for the GPU budget of ``scripts/gpu_recipe.sh``
([docs/research/gpu.md](../docs/research/gpu.md)).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lapmusic.data.registry import load_dataset  # noqa: E402
from lapmusic.model.config import ModelConfig  # noqa: E402
from lapmusic.model.rnn import PianoRollRNN  # noqa: E402
from lapmusic.training.epoch import EVAL_FRAMES, evaluate_tensors, length_batches, train_epoch  # noqa: E402

VIEWS = {"view", "reshape", "as_strided", "slice", "select", "expand", "transpose", "t", "permute", "unsqueeze",
         "squeeze", "detach", "alias", "empty", "empty_like", "resize_", "empty_strided", "_reshape_alias", "unbind",
         "split", "narrow", "chunk", "lift_fresh", "result_type", "item", "_local_scalar_dense", "is_nonzero",
         "contiguous", "expand_as", "view_as", "flatten", "_unsafe_view"}


def leaf_ops(prof) -> int:
    """Leaf ``aten::`` operators that compute (views and allocations left out)."""
    return sum(1 for e in prof.events()
               if e.name.startswith("aten::") and not e.cpu_children and e.name[6:] not in VIEWS)


def steps_per_epoch(lengths, batch: int = 8, bptt: int = 100) -> int:
    return sum(math.ceil((max(lengths[i] for i in b) - 1) / bptt) for b in length_batches(lengths, batch, None))


def chunks_per_pass(lengths, batch: int = 8) -> int:
    """Evaluation windows over pieces of ``lengths`` (the loop of ``lapmusic.training.epoch._accumulate``)."""
    count = 0
    for b in length_batches([n for n in lengths if n >= 2], batch, None):
        rows_left = sorted((lengths[i] - 1 for i in b), reverse=True)
        start = 0
        while start < rows_left[0]:
            rows = sum(1 for n in rows_left if n > start)
            start += max(1, min(1000, EVAL_FRAMES // rows))
            count += 1
    return count


def count(dataset, config: ModelConfig, pieces: int) -> tuple[float, float]:
    """Operators per training step and per evaluation chunk of ``config`` on the first training pieces."""
    torch.manual_seed(0)
    model = PianoRollRNN.from_config(config)
    model.head.prepare(dataset.train)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    train = [torch.as_tensor(s, dtype=torch.uint8) for s in dataset.train[:pieces]]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = train_epoch(model, optimizer, train, batch_size=8, bptt=100, clip=1.0, rng=np.random.default_rng(0))
    per_step = leaf_ops(prof) / result["steps"]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        evaluate_tensors(model, train, 8, acc_samples=2)
    return per_step, leaf_ops(prof) / chunks_per_pass([len(s) for s in dataset.train[:pieces]])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="jsb,nottingham,musedata,pianomidi")
    parser.add_argument("--pieces", type=int, default=16, help="training pieces profiled (default 16)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("| dataset | steps / epoch | valid chunks | train chunks | test chunks | Bernoulli ops / step | "
          "recipe ops / step | Bernoulli ops / chunk | recipe ops / chunk |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in args.datasets.split(","):
        data = load_dataset(name)
        recipe = ModelConfig(hidden=128, dropout=0.5, output="nade", nade_hidden=64 if name == "jsb" else 150,
                             nade_vocab=512, nade_repeat=True, nade_repeat_window=32)
        bernoulli = count(data, ModelConfig(hidden=128), args.pieces)
        nade = count(data, recipe, args.pieces)
        lengths = {split: [len(s) for s in getattr(data, split)] for split in ("train", "valid", "test")}
        print(f"| {name} | {steps_per_epoch(lengths['train'])} | {chunks_per_pass(lengths['valid'])} | "
              f"{chunks_per_pass(lengths['train'])} | {chunks_per_pass(lengths['test'])} | {bernoulli[0]:.0f} | "
              f"{nade[0]:.0f} | {bernoulli[1]:.0f} | {nade[1]:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
