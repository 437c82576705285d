"""How fast is sampling and audio rendering?

Sampling is step by step (each frame is fed back), so it cannot be one big matrix product. The baseline,
measured in the same run, is one teacher-forced forward pass over a roll of the same length (what
evaluation does): the ratio says what the frame-by-frame loop costs on top of the arithmetic.

Audio: FluidSynth (with the soundfont lapmusic finds) against pretty_midi's sine synthesis on the same
MIDI, for a 512-step sample.

NADE output: sampling draws the 88 keys of every frame one by one (lapmusic/model/nade.py), so a frame costs 88
small steps on top of the recurrent step. ``--nade`` times 64-frame samples (the app's default length) with
both outputs (target: under 2 s for NADE on a 2-core CPU).

    .venv/bin/python benchmarks/bench_sampling.py [--steps 512] [--repeats 5] [--nade]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lapmusic.data.midi import roll_to_midi
from lapmusic.model.config import ModelConfig
from lapmusic.model.rnn import PianoRollRNN
from lapmusic.sampling.audio import _render_sine, find_soundfont, fluidsynth_available, render_wav
from lapmusic.sampling.sample import generate


def best_of(repeats, fn):
    fn()  # warm-up: first calls pay for allocations and lazy initialisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def nade_rows(repeats: int, steps: int = 64) -> None:
    """Seconds for one ``steps``-frame sample (batch 1 and 8, max polyphony 6), Bernoulli vs NADE output."""
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; {steps} frames, best (median) "
          f"of {repeats}")
    print("| output | batch | seconds, best (median) | frames/s |")
    print("| --- | ---: | ---: | ---: |")
    # The last row is JSB's sampling recipe (docs/models.md, "The sampling recipe"): a chord vocabulary of 512 and a
    # 32-frame copy window on top of the NADE. Untrained weights: the cost does not depend on their values.
    variants = (("bernoulli", {}), ("nade", {}),
                ("nade + vocab 512 + copy window 32", dict(nade_vocab=512, nade_repeat=True, nade_repeat_window=32)))
    for name, extra in variants:
        torch.manual_seed(0)
        model = PianoRollRNN.from_config(ModelConfig(128, output=name.split()[0], nade_hidden=64, **extra)).eval()
        for batch in (1, 8):
            best, median = best_of(repeats, lambda: generate(model, steps=steps, seed=0, n_samples=batch,
                                                              max_polyphony=6))
            print(f"| {name} | {batch} | {best:.3f} ({median:.3f}) | {batch * steps / best:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--nade", action="store_true",
                        help="only time 64-frame samples, Bernoulli vs NADE output (hidden 128, NADE 64 units)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.nade:
        nade_rows(args.repeats)
        return
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; {args.steps} steps, "
          f"best (median) of {args.repeats}")
    print(f"{'hidden':>6} {'batch':>5} {'sample (s)':>16} {'forward (s)':>16} {'ratio':>6} {'frames/s':>9}")
    roll = None
    for hidden in (64, 128, 512):
        model = PianoRollRNN.from_config(ModelConfig(hidden)).eval()
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
