"""Why are NADE samples' distinct chords per frame above the real pieces'? (docs/research/nade-sampling.md, "Distinct chords").

For each finished NADE run folder, on ``--steps``-frame excerpts (the first frames of pieces at least that long,
:func:`lapmusic.sampling.stats.reference_excerpts`) of the training and validation splits:

- ``real``: the excerpts' mean distinct chords per sounding frame and repeated-frame share;
- ``one-step``: every frame ``t >= 2`` of each excerpt replaced by a frame drawn (temperature 1) from the model
  given the *real* frames before it (teacher forcing): the statistic of the model's conditional distributions
  with no drift of its own;
- the model's NLL per frame of the real excerpts, and of its own free samples (from silence): a free sample
  that drifts into places the model is unsure of scores a higher NLL than real music;
- ``primed``: free samples started from the first frame of a real training excerpt instead of silence (the
  model is trained to predict frame 2 from frame 1 and never sees a silent frame before a piece's start).
- ``hold``: how often the model holds the *real* previous frame, given the real history: ``real`` the share of
  frames ``t >= 2`` equal to frame ``t - 1``; ``model`` the mean exact probability ``P(x_t = x_{t-1} | history)``
  (from the NADE's ``log_prob``); ``drawn`` the share of one-step frames equal to the real frame before them.
  (The one-step roll's ``repeated_frames`` compares two *drawn* frames, independent draws given different
  histories, so it is not this: it stays low even for a model that holds as often as the music.)
- ``kinds``: every frame ``t >= 2`` of the real excerpts and of the free samples is a ``hold`` (equal to frame
  ``t - 1``), a ``return`` (equal to an earlier frame of the same roll, not ``t - 1``) or ``new``; distinct chords
  per frame is about ``new`` plus the first frame's share, so this says which of holding or returning is missing.

    LAPMUSIC_DATA_DIR=/path/to/datasets python benchmarks/nade_diagnose.py /tmp/nade2/runs/jsb-nade-random
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from lapmusic.sampling.sample import generate
from lapmusic.sampling.stats import reference_excerpts, summarize
from lapmusic.training.build import run_split
from lapmusic.training.results import load_run


def teacher_forced(model, rolls: list[np.ndarray], seed: int = 0) -> tuple[float, list[np.ndarray], dict]:
    """``(NLL per predicted frame, one-step rolls, hold)`` for equal-length ``(T, 88)`` rolls: frame ``t`` of a
    one-step roll is drawn from the model given the real frames ``< t`` (frame 1 is copied); ``hold`` as in the
    module docstring."""
    x = torch.as_tensor(np.stack(rolls), dtype=torch.float32)
    with torch.inference_mode():
        states, _ = model.hidden_states(x[:, :-1], None)
        nll = float(-model.head.log_prob(states, x[:, 1:], x[:, :-1]).mean())
        generator = torch.Generator()
        generator.manual_seed(seed)
        b, t, h = states.shape
        extra = {}
        extra = model.head.history_kwargs(x[:, :-1], None, torch.float32)  # a copy window's real frames read so far
        drawn = model.head.sample(states.reshape(b * t, h), 1.0, None, generator,
                                  inputs=x[:, :-1].reshape(b * t, -1), **extra).reshape(b, t, -1).numpy()
        p_hold = model.head.log_prob(states, x[:, :-1], x[:, :-1]).exp()  # P(frame t+1 = frame t | real history)
    previous, following = x[:, :-1].numpy() > 0, x[:, 1:].numpy() > 0
    hold = {"real": round(float((following == previous).all(-1).mean()), 3), "model": round(float(p_hold.mean()), 3),
            "drawn": round(float(((drawn > 0) == previous).all(-1).mean()), 3)}
    return nll, [np.concatenate([r[:1], f]) for r, f in zip(rolls, drawn)], hold


def frame_kinds(rolls) -> dict:
    """Shares of frames ``t >= 2`` of ``rolls`` (each ``(T, 88)``) that hold, return to an earlier chord, or are new."""
    counts = {"hold": 0, "return": 0, "new": 0}
    for roll in rolls:
        frames = [bytes((np.asarray(f) > 0).astype(np.uint8)) for f in roll]
        seen = {frames[0]}
        for before, frame in zip(frames, frames[1:]):
            counts["hold" if frame == before else "return" if frame in seen else "new"] += 1
            seen.add(frame)
    total = max(1, sum(counts.values()))
    return {k: round(v / total, 3) for k, v in counts.items()}


def _pair(summary: dict) -> dict:
    return {"distinct_chords": round(summary["distinct_chords"]["mean"], 3),
            "repeated_frames": round(summary["repeated_frames"]["mean"], 3), "pieces": summary["pieces"]}


def diagnose(path: str, steps: int, samples: int) -> dict:
    run = load_run(path, device="cpu")
    model = run.model.eval()
    out: dict = {"run": path, "dataset": run.config.dataset, "valid_nll": run.final.get("best_valid_nll")}
    for split in ("train", "valid"):
        real = reference_excerpts(run_split(run.config, split), steps)
        real = [r for r in real if len(r) == steps]
        nll, one_step, hold = teacher_forced(model, real)
        out[split] = {"real": _pair(summarize(real)), "real_kinds": frame_kinds(real),
                      "one_step": _pair(summarize(one_step)), "real_nll": round(nll, 3), "hold": hold}
    free = list(generate(model, steps=steps, temperature=1.0, seed=0, n_samples=samples))
    out["free"] = {**_pair(summarize(free)), "kinds": frame_kinds(free),
                   "self_nll": round(teacher_forced(model, free)[0], 3)}
    starts = reference_excerpts(run_split(run.config, "train"), steps)
    pick = np.random.default_rng(0).choice(len(starts), min(samples, len(starts)), replace=False)
    primed = [generate(model, steps=steps - 1, temperature=1.0, seed=i, primer=starts[j][:1])[0]
              for i, j in enumerate(pick)]
    out["primed"] = _pair(summarize(primed))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for path in args.runs:
        print(json.dumps(diagnose(path, args.steps, args.samples)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
