"""How fast is sampling and audio rendering?

Sampling is step by step (each frame is fed back), so it cannot be one big matrix product. The baseline,
measured in the same run, is one teacher-forced forward pass over a roll of the same length (what
evaluation does): the ratio says what the frame-by-frame loop costs on top of the arithmetic.

Audio: FluidSynth (with the soundfont lapmusic finds) against pretty_midi's sine synthesis on the same
MIDI, for a 512-step sample.

    .venv/bin/python benchmarks/bench_sampling.py [--steps 512] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from lapmusic.audio import _render_sine, find_soundfont, fluidsynth_available, render_wav
from lapmusic.midi import roll_to_midi
from lapmusic.model import PianoRollRNN
from lapmusic.sample import generate


def best_of(repeats, fn):
    fn()  # warm-up: first calls pay for allocations and lazy initialisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; {args.steps} steps, "
          f"best (median) of {args.repeats}")
    print(f"{'hidden':>6} {'batch':>5} {'sample (s)':>16} {'forward (s)':>16} {'ratio':>6} {'frames/s':>9}")
    roll = None
    for hidden in (64, 128, 512):
        model = PianoRollRNN(hidden).eval()
        for batch in (1, 8):
            sample_best, sample_median = best_of(
                args.repeats, lambda: generate(model, steps=args.steps, seed=0, n_samples=batch, max_polyphony=6)
            )
            x = torch.zeros(batch, args.steps, 88)

            def forward():
                with torch.inference_mode():
                    model(x)

            forward_best, forward_median = best_of(args.repeats, forward)
            print(f"{hidden:>6} {batch:>5} {sample_best:>8.3f} ({sample_median:.3f}) {forward_best:>8.4f} "
                  f"({forward_median:.4f}) {sample_best / forward_best:>6.0f} {batch * args.steps / sample_best:>9.0f}")
            if hidden == 128 and batch == 1:
                roll = generate(model, steps=args.steps, seed=0, temperature=0.5, max_polyphony=4)[0]

    pm = roll_to_midi(roll, step_seconds=0.25)
    notes = sum(len(i.notes) for i in pm.instruments)
    print(f"\naudio for a {args.steps}-step sample ({notes} notes, {args.steps * 0.25:.0f} s of music), 22050 Hz:")
    sine_best, sine_median = best_of(args.repeats, lambda: _render_sine(pm, 22050))
    print(f"  pretty_midi sine synthesis: {sine_best:.3f} s (median {sine_median:.3f})  [baseline]")
    if fluidsynth_available():
        render_wav(pm, 22050)  # first call loads the soundfont
        fluid_best, fluid_median = best_of(args.repeats, lambda: render_wav(pm, 22050))
        print(f"  FluidSynth ({find_soundfont()}): {fluid_best:.3f} s (median {fluid_median:.3f}), "
              f"ratio {fluid_best / sine_best:.1f}x the baseline")
    else:
        print("  FluidSynth: not available on this machine")


if __name__ == "__main__":
    main()
