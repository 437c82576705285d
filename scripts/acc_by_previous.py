"""Decision rules for ACC on a trained network's own probabilities, split by each key's previous state.

For every run folder given, the network's probabilities ``p`` of frames 2..T of the validation and test
splits are collected with, per key, whether it was on in the frame just read (the network's input). Then,
all chosen on the validation split only and scored once on the test split:

(a) **one threshold** ``p >= t`` (the 0.005 grid of ``lapmusic.model.metrics.best_threshold``; the run's
    ``final.json`` ``acc_tuned``),
(b) **two thresholds**: ``p >= t_on`` for keys on in the previous frame, ``p >= t_off`` for keys off (every
    pair of the same grid),
(c) **per-group Platt calibration**: ``p' = sigmoid(a_g logit(p) + b_g)`` fitted by NLL on validation for each
    group ``g`` (previous on / off), then one threshold on ``p'``. A monotone map per group turns one
    threshold on ``p'`` into two thresholds on ``p``, so (c) is a member of (b)'s family chosen by NLL instead
    of by ACC: it can only match or trail (b) on validation.

Why (b): corpus ACC ``TP / (TP + FP + FN)`` of calibrated marginals is maximised (in expectation) by one
global threshold ``p > lambda / (1 + lambda)``, ``lambda`` the best ACC as a fraction (Dinkelbach), so a
second threshold can only help where the marginals are miscalibrated differently in the two groups. The
reliability table (validation: mean ``p`` against the observed frequency per bin and group) shows where.
Copy-previous ACC (frame ``t`` = frame ``t-1``) is printed next to them, with the number of pieces on which
rule (b) beats it, and, as a diagnostic upper bound that is never a result, the best test ACC of any pair
of thresholds picked on the test split itself (if even that does not beat copying, no rule of family (b)
can).

    LAPMUSIC_DATA_DIR=... python scripts/acc_by_previous.py RUN_DIR [RUN_DIR ...] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lapmusic.model.metrics import THRESHOLD_BINS, _acc, acc_curve, best_threshold, copy_previous_acc, nll
from lapmusic.training.build import run_split
from lapmusic.training.epoch import _active_rows, _first_rows, _to_tensors, length_batches, pad_batch
from lapmusic.training.results import load_run

RELIABILITY_EDGES = np.array([0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0 + 1e-9])


@torch.no_grad()
def collect(model, seqs, device, batch_size: int = 64, window: int = 1000):
    """``(p, previous, played, piece)``: flat arrays over every key of frames 2..T of ``seqs`` (Bernoulli
    output); ``piece`` is the index in ``seqs`` each entry comes from."""
    pieces = _to_tensors(seqs, device)
    lengths = [len(p) for p in pieces]
    usable = [i for i, n in enumerate(lengths) if n >= 2]
    out_p, out_x, out_y, out_piece = [], [], [], []
    for batch in length_batches([lengths[i] for i in usable], batch_size, None):
        inputs, targets, mask = pad_batch([pieces[usable[i]] for i in batch])
        # pad_batch orders its rows longest piece first (a stable sort): row r is piece rows_to_piece[r]
        rows_to_piece = torch.as_tensor(sorted((usable[i] for i in batch), key=lambda i: -lengths[i]))
        h = None
        for start in range(0, inputs.shape[1], window):
            rows = _active_rows(mask, start)
            x = inputs[:rows, start : start + window]
            logits, h = model(x, _first_rows(h, rows))
            real = mask[:rows, start : start + window] > 0
            out_p.append(torch.sigmoid(logits.double())[real].cpu().numpy().ravel())
            out_x.append((x[real] > 0.5).cpu().numpy().ravel())
            out_y.append((targets[:rows, start : start + window][real] > 0.5).cpu().numpy().ravel())
            row = torch.arange(rows)[:, None, None].expand(rows, real.shape[1], logits.shape[-1])
            out_piece.append(rows_to_piece[row[real.cpu()]].numpy().ravel())
    return tuple(np.concatenate(parts) for parts in (out_p, out_x, out_y, out_piece))


def hist(p, played):
    bins = np.clip((p * THRESHOLD_BINS).astype(np.int64), 0, THRESHOLD_BINS - 1)
    return (np.bincount(bins[played], minlength=THRESHOLD_BINS),
            np.bincount(bins[~played], minlength=THRESHOLD_BINS))


def two_threshold_grid(p, previous, played):
    """``(bins, bins)`` ACC in % at ``(t_on, t_off) = (i / bins, j / bins)``."""
    pos_on, neg_on = hist(p[previous], played[previous])
    pos_off, neg_off = hist(p[~previous], played[~previous])
    tp_on, fp_on = np.cumsum(pos_on[::-1])[::-1], np.cumsum(neg_on[::-1])[::-1]
    tp_off, fp_off = np.cumsum(pos_off[::-1])[::-1], np.cumsum(neg_off[::-1])[::-1]
    positives = pos_on.sum() + pos_off.sum()
    tp = tp_on[:, None] + tp_off[None, :]
    fp = fp_on[:, None] + fp_off[None, :]
    return 100.0 * tp / (fp + positives)  # TP + FP + FN = FP + positives


def acc_at(played, on):
    """Micro ACC in % of the decisions ``on`` against ``played`` (flat boolean arrays)."""
    return _acc(float((on & played).sum()), float((on & ~played).sum()), float((~on & played).sum()))


def pieces_beating_copy(on, previous, played, piece) -> str:
    """``"won/pieces"``: pieces whose ACC under the decisions ``on`` is above copy-previous's on that piece."""
    def per_piece(decided):
        tp = np.bincount(piece, weights=decided & played)
        wrong_or_missed = np.bincount(piece, weights=decided & ~played) + np.bincount(piece, weights=played)
        return tp / np.where(wrong_or_missed > 0, wrong_or_missed, 1)  # TP / (FP + positives)
    present = np.bincount(piece) > 0
    return f"{int((per_piece(on) > per_piece(previous))[present].sum())}/{int(present.sum())}"


def frame_nll(p, played):
    """NLL in nats per frame of the flat per-key arrays (88 entries a frame, as :func:`collect` returns them)."""
    return nll(p.reshape(-1, 88), played.reshape(-1, 88))


def platt(p, played, iterations: int = 50):
    """``(a, b)`` minimising the NLL of ``sigmoid(a logit(p) + b)`` (Newton's method on two parameters)."""
    z = np.log(np.clip(p, 1e-12, 1)) - np.log(np.clip(1 - p, 1e-12, 1))
    y = played.astype(np.float64)
    w = np.zeros(2)
    features = np.stack([z, np.ones_like(z)], 1)
    for _ in range(iterations):
        q = 1 / (1 + np.exp(-(features @ w)))
        gradient = features.T @ (q - y)
        hessian = (features * (q * (1 - q))[:, None]).T @ features + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w


def apply_platt(p, previous, weights):
    z = np.log(np.clip(p, 1e-12, 1)) - np.log(np.clip(1 - p, 1e-12, 1))
    a = np.where(previous, weights[1][0], weights[0][0])
    b = np.where(previous, weights[1][1], weights[0][1])
    return 1 / (1 + np.exp(-(a * z + b)))


def reliability(p, previous, played):
    rows = []
    for group, select in (("on", previous), ("off", ~previous)):
        for lo, hi in zip(RELIABILITY_EDGES[:-1], RELIABILITY_EDGES[1:]):
            inside = select & (p >= lo) & (p < hi)
            n = int(inside.sum())
            if n:
                rows.append({"group": group, "bin": f"[{lo:.2f}, {min(hi, 1):.2f})", "n": n,
                             "mean_p": float(p[inside].mean()), "observed": float(played[inside].mean())})
        rows.append({"group": group, "bin": "all", "n": int(select.sum()), "mean_p": float(p[select].mean()),
                     "observed": float(played[select].mean())})
    return rows


def analyse(run_dir) -> dict:
    run = load_run(run_dir, device="cpu")
    valid, test = run_split(run.config, "valid"), run_split(run.config, "test")
    pv, xv, yv, piece_v = collect(run.model, valid, run.device)
    pt, xt, yt, piece_t = collect(run.model, test, run.device)
    grid = np.arange(THRESHOLD_BINS) / THRESHOLD_BINS
    # (a) one threshold, exactly as the library chooses it
    t1 = best_threshold(*hist(pv, yv))
    single = {"threshold": t1, "valid": float(acc_curve(*hist(pv, yv))[round(t1 * THRESHOLD_BINS)]),
              "test": acc_at(yt, pt >= t1 - 1e-12)}
    # (b) two thresholds, every pair of the grid 1..199
    curve = two_threshold_grid(pv, xv, yv)[1:, 1:]
    i, j = np.unravel_index(int(np.argmax(curve)), curve.shape)
    t_on, t_off = grid[i + 1], grid[j + 1]
    on_test = np.where(xt, pt >= t_on - 1e-12, pt >= t_off - 1e-12)
    on_valid = np.where(xv, pv >= t_on - 1e-12, pv >= t_off - 1e-12)
    two = {"t_on": float(t_on), "t_off": float(t_off), "valid": float(curve[i, j]), "test": acc_at(yt, on_test),
           "pieces_beating_copy_valid": pieces_beating_copy(on_valid, xv, yv, piece_v),
           "pieces_beating_copy_test": pieces_beating_copy(on_test, xt, yt, piece_t),
           # an upper bound, never a result: the best pair of thresholds picked on the test split itself
           "test_bound": float(two_threshold_grid(pt, xt, yt)[1:, 1:].max())}
    # (c) Platt per group on validation NLL, then one threshold on the calibrated p
    weights = {0: platt(pv[~xv], yv[~xv]), 1: platt(pv[xv], yv[xv])}
    cv, ct = apply_platt(pv, xv, weights), apply_platt(pt, xt, weights)
    tc = best_threshold(*hist(cv, yv))
    calibrated = {"a_on": float(weights[1][0]), "b_on": float(weights[1][1]), "a_off": float(weights[0][0]),
                  "b_off": float(weights[0][1]), "threshold": tc,
                  "valid": acc_at(yv, cv >= tc - 1e-12), "test": acc_at(yt, ct >= tc - 1e-12),
                  "valid_nll_before": frame_nll(pv, yv), "valid_nll_after": frame_nll(cv, yv),
                  "test_nll_before": frame_nll(pt, yt), "test_nll_after": frame_nll(ct, yt)}
    return {"run": str(run_dir), "dataset": run.config.dataset, "init": run.config.init, "seed": run.config.seed,
            "readout_skip": bool(run.config.model.readout_skip),
            "acc_05": acc_at(yt, pt >= 0.5), "final_acc": (run.final or {}).get("acc"),
            "final_acc_tuned": (run.final or {}).get("acc_tuned"), "final_threshold": (run.final or {}).get("threshold"),
            "copy_previous_test": copy_previous_acc(test), "copy_previous_valid": copy_previous_acc(valid),
            "single": single, "two": two, "calibrated": calibrated,
            "reliability_valid": reliability(pv, xv, yv)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--json", help="write every result to this JSON file")
    parser.add_argument("--markdown", action="store_true", help="also print the results as Markdown table rows")
    args = parser.parse_args(argv)
    results = []
    for run_dir in args.runs:
        r = analyse(run_dir)
        results.append(r)
        s, t, c = r["single"], r["two"], r["calibrated"]
        print(f"{r['dataset']} {r['init']} s{r['seed']}{' skip' if r['readout_skip'] else ''}: test ACC p>=0.5 "
              f"{r['acc_05']:.2f}; one threshold {s['threshold']:.3f}: valid {s['valid']:.2f} test {s['test']:.2f} "
              f"(final.json {r['final_acc_tuned']}); two (on {t['t_on']:.3f}, off {t['t_off']:.3f}): valid "
              f"{t['valid']:.2f} test {t['test']:.2f} (pieces beating copy: valid {t['pieces_beating_copy_valid']}, "
              f"test {t['pieces_beating_copy_test']}; upper bound, thresholds picked on test: {t['test_bound']:.2f}); "
              f"Platt+one {c['threshold']:.3f}: valid {c['valid']:.2f} test "
              f"{c['test']:.2f} (valid NLL {c['valid_nll_before']:.3f}->{c['valid_nll_after']:.3f}, test "
              f"{c['test_nll_before']:.3f}->{c['test_nll_after']:.3f}); copy-previous valid "
              f"{r['copy_previous_valid']:.2f} test {r['copy_previous_test']:.2f}", flush=True)
        for row in r["reliability_valid"]:
            print(f"    prev {row['group']:>3} {row['bin']:>14} n {row['n']:>8} mean p {row['mean_p']:.3f} "
                  f"observed {row['observed']:.3f}")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    if args.markdown:
        print(markdown(results))


def markdown(results) -> str:
    lines = ["| dataset | init | seed | ACC % p ≥ 0.5 | one threshold (valid) | two thresholds on / off (valid) | "
             "Platt per group + one threshold | copy-previous | pieces where two beat copy (test) | "
             "bound: two picked on test | test NLL (after Platt) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        s, t, c = r["single"], r["two"], r["calibrated"]
        lines.append(f"| {r['dataset']} | {r['init']}{' + skip' if r['readout_skip'] else ''} | {r['seed']} | "
                     f"{r['acc_05']:.2f} | {s['test']:.2f} (p ≥ {s['threshold']:.3f}; {s['valid']:.2f}) | "
                     f"{t['test']:.2f} ({t['t_on']:.3f} / {t['t_off']:.3f}; {t['valid']:.2f}) | {c['test']:.2f} | "
                     f"{r['copy_previous_test']:.2f} ({r['copy_previous_valid']:.2f}) | "
                     f"{t['pieces_beating_copy_test']} | {t['test_bound']:.2f} | "
                     f"{c['test_nll_before']:.3f} ({c['test_nll_after']:.3f}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
