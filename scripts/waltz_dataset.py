"""Write 40 Nottingham training pieces in 3/4 as MIDI and add them as a user dataset, the way a musician would.

The small-dataset measurement of docs/research/presets.md: a class's own 40 pieces, added with
``lapmusic datasets add``. Nottingham carries no meter, so a piece counts as 3/4 when its note onsets repeat
every 6 frames (a 3/4 bar of eighth-note frames) more than every 8 (a 4/4 bar): the autocorrelation of the
onset counts at lags 6 and 12 beats the one at lags 8 and 16. The MIDI files are written with lapmusic's own
``roll_to_midi`` (0.25 s frames, 2 frames per beat: 120 qpm) and read back at 2 frames per beat, so the
dataset's frames are the benchmark's.

    LAPMUSIC_DATA_DIR=/work/shared/datasets LAPMUSIC_CACHE_DIR=/tmp/waltz-cache \
        python scripts/waltz_dataset.py --midi-dir /tmp/waltz-midi --name waltzes
    # then: LAPMUSIC_CACHE_DIR=/tmp/waltz-cache lapmusic train --preset music --dataset user:waltzes ...
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np


def triple_score(roll: np.ndarray) -> float:
    """How much more the onsets repeat every 6 frames than every 8 (positive: a 3/4 feel at eighth notes)."""
    onsets = np.diff(np.vstack([np.zeros((1, roll.shape[1])), roll > 0]).astype(np.int8), axis=0).clip(0).sum(1)
    x = onsets - onsets.mean()
    denominator = float(x @ x) or 1.0

    def autocorrelation(lag: int) -> float:
        return float(x[:-lag] @ x[lag:]) / denominator

    return autocorrelation(6) + autocorrelation(12) - autocorrelation(8) - autocorrelation(16)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--midi-dir", required=True, help="folder for the MIDI files (created)")
    parser.add_argument("--name", default="waltzes", help="user dataset name (default waltzes)")
    parser.add_argument("--pieces", type=int, default=40, help="how many pieces (default 40)")
    args = parser.parse_args()

    from lapmusic.data.midi import roll_to_midi
    from lapmusic.data.registry import load_dataset

    train = load_dataset("nottingham").train
    scores = [triple_score(piece) for piece in train]
    chosen = [i for i in np.argsort(scores)[::-1] if len(train[i]) >= 64][:args.pieces]
    out = Path(args.midi_dir)
    out.mkdir(parents=True, exist_ok=True)
    for rank, index in enumerate(sorted(chosen)):
        roll_to_midi(train[index], step_seconds=0.25, frames_per_beat=2).write(str(out / f"{rank:02d}-n{index}.mid"))
    print(f"wrote {len(chosen)} pieces (3/4 score {min(scores[i] for i in chosen):.2f} and up) to {out}",
          file=sys.stderr)
    return subprocess.call([sys.executable, "-m", "lapmusic.cli", "datasets", "add", args.name, str(out),
                            "--steps-per-beat", "2", "--replace"])


if __name__ == "__main__":
    raise SystemExit(main())
