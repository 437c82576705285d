"""The skip-only model: one logistic regression per key on that key's previous state, nothing else.

``P(key k on at t | on at t-1)`` and ``P(on at t | off at t-1)`` are counted on the training split (add-one
smoothing); the decision threshold is chosen on the validation split (0.005 grid) and test NLL and ACC are
reported on frames 2..T of the test split, pooled, next to the copy-previous-frame ACC. With a threshold between
the two probabilities of every key its predictions *are* the previous frame, so it shows what a network with a
previous-frame skip can reach in ACC from the skip alone (docs/research/copy-previous-acc.md).

    LAPMUSIC_DATA_DIR=... python scripts/skip_only_baseline.py pianomidi musedata
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lapmusic.data.registry import load_dataset
from lapmusic.model.metrics import accuracy, copy_previous_acc, nll


def pairs(seqs):
    usable = [s for s in seqs if len(s) > 1]
    return (np.concatenate([s[:-1] for s in usable]).astype(bool),
            np.concatenate([s[1:] for s in usable]).astype(bool))


def main(keys) -> None:
    for key in keys:
        ds = load_dataset(key)
        X, Y = pairs(ds.train)
        P1 = ((Y & X).sum(0) + 1) / (X.sum(0) + 2)
        P0 = ((Y & ~X).sum(0) + 1) / ((~X).sum(0) + 2)
        (Xv, Yv), (Xt, Yt) = pairs(ds.valid), pairs(ds.test)
        Pv, Pt = np.where(Xv, P1, P0), np.where(Xt, P1, P0)
        grid = np.arange(1, 200) / 200
        threshold = grid[int(np.argmax([accuracy(Pv, Yv, t) for t in grid]))]
        test_nll = nll(Pt, Yt)
        held = X.sum(0) > 50
        print(f"{key}: skip-only test NLL {test_nll:.3f}, ACC p>=0.5 {accuracy(Pt, Yt, 0.5):.2f} %, ACC p>={threshold:.3f} "
              f"(validation) {accuracy(Pt, Yt, threshold):.2f} %; copy-previous {copy_previous_acc(ds.test):.2f} %; "
              f"median P(on | previous on) over keys held in > 50 training frames {np.median(P1[held]):.2f}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["pianomidi"])
