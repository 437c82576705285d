"""Musicality statistics against hand-computed cases, the files they read, and `lapmusic stats`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lapmusic.cli import main as cli
from lapmusic.core.errors import LapMusicError
from lapmusic.sampling import stats
from lapmusic.sampling.stats_sources import load_rolls, sample_stats


def _roll(frames: list[list[int]]) -> np.ndarray:
    """A roll from lists of MIDI pitches per frame."""
    roll = np.zeros((len(frames), 88), dtype=np.uint8)
    for t, pitches in enumerate(frames):
        for pitch in pitches:
            roll[t, pitch - 21] = 1
    return roll


C, E, G, A = 60, 64, 67, 69


def test_hand_computed_piece():
    # frames: C-E-G, C-E-G, silence, A, A-C, C-E-G
    roll = _roll([[C, E, G], [C, E, G], [], [A], [A, C], [C, E, G]])
    s = stats.piece_stats(roll)
    assert s["frames"] == 6
    assert s["pitch_range"] == A - C  # 9 semitones
    assert s["polyphony"] == pytest.approx((3 + 3 + 1 + 2 + 3) / 5)
    assert s["repeated_frames"] == pytest.approx(1 / 5)  # only frame 2 repeats frame 1
    assert s["distinct_chords"] == pytest.approx(3 / 5)  # {CEG, A, AC} over 5 sounding frames
    assert s["silence"] == pytest.approx(1 / 6)
    # notes: C 0-1 (2), E 0-1 (2), G 0-1 (2), A 3-4 (2), C 4-5 (2), E 5 (1), G 5 (1)
    assert sorted(stats.note_lengths(roll).tolist()) == [1, 1, 2, 2, 2, 2, 2]
    assert s["note_length"] == pytest.approx(12 / 7)
    assert s["note_length_hist"] == pytest.approx([2 / 7, 5 / 7, 0, 0, 0])


def test_key_fit_finds_the_key_of_a_scale():
    major = [60, 62, 64, 65, 67, 69, 71, 72]  # C major scale, the tonic twice as long
    roll = _roll([[p] for p in major] + [[60]] * 4)
    fit, key = stats.key_fit(roll)
    assert key == "C major" and fit > 0.7
    shifted = np.roll(roll, 7, axis=1)  # everything a fifth up: G major
    assert stats.key_fit(shifted)[1] == "G major"
    # The correlation is Pearson's with the rotated profile: check one value by hand.
    profile = np.zeros(12)
    for p in major + [60] * 4:
        profile[p % 12] += 1
    assert fit == pytest.approx(np.corrcoef(profile, stats.KK_MAJOR)[0, 1])
    assert stats.key_fit(np.zeros((4, 88)))[0] is None
    flat = np.zeros((3, 88), dtype=np.uint8)
    flat[:, 3:87] = 1  # C1 .. B7: seven whole octaves, a flat pitch-class profile: no key
    assert stats.key_fit(flat) == (None, None)


def test_silent_and_single_frame_pieces():
    s = stats.piece_stats(np.zeros((5, 88)))
    assert s["pitch_range"] is None and s["polyphony"] is None and s["silence"] == 1.0
    assert s["repeated_frames"] == 1.0 and s["note_length"] is None
    one = stats.piece_stats(_roll([[C]]))
    assert one["repeated_frames"] is None and one["note_length"] == 1.0 and one["pitch_range"] == 0
    with pytest.raises(LapMusicError, match=r"\(T, 88\)"):
        stats.piece_stats(np.zeros((4, 12)))


def test_summary_compare_and_table():
    real = [_roll([[C, E, G]] * 4), _roll([[C, E, G]] * 2 + [[A]] * 2), _roll([[A], [A], [C], [C]])]
    noisy = [_roll([[C], [E], [G], [A]])]  # a new frame every time
    result = stats.compare(noisy, real)
    assert result["reference"]["repeated_frames"]["mean"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert result["samples"]["repeated_frames"]["mean"] == 0.0
    assert result["inside"]["repeated_frames"] is False
    assert result["inside"]["pitch_range"] is True  # 9 lies inside the real 10-90 % range (0 .. 9)
    rows = stats.table_rows(result)
    assert [r["statistic"] for r in rows] == [stats.LABELS[name] for name in stats.STATS]
    # notes: 3 of 4 frames (CEG held), 3 + 1 of 2 (CEG, A), 2 of 2 (A, C): 6 of length 2, 3 of length 4
    assert stats.summarize(real)["note_length_hist"] == pytest.approx([0, 6 / 9, 3 / 9, 0, 0])
    excerpts = stats.reference_excerpts(real + [np.zeros((0, 88))], 2)
    assert len(excerpts) == 3 and all(len(e) == 2 for e in excerpts)


def test_reference_excerpts_are_as_long_as_the_samples():
    short, long_piece = _roll([[C], [E]]), _roll([[C], [E], [G], [A], [C]])
    # Pieces shorter than the samples are left out: the excerpts are exactly ``frames`` long, from frame 0.
    excerpts = stats.reference_excerpts([short, long_piece, short], 4)
    assert len(excerpts) == 1 and (excerpts[0] == long_piece[:4]).all()
    # No piece long enough: every piece whole (the only comparison left).
    excerpts = stats.reference_excerpts([short, short[:1]], 4)
    assert [len(e) for e in excerpts] == [2, 1]


def test_files_and_cli(tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    from lapmusic.data.midi import roll_to_midi

    roll = _roll([[C, E, G]] * 4 + [[A]] * 4)
    roll_to_midi(roll, step_seconds=0.25).write(str(tmp_path / "piece.mid"))
    np.savez(tmp_path / "rolls.npz", a=roll, b=np.stack([roll, roll]))
    rolls = load_rolls([tmp_path])
    assert len(rolls) == 4 and all((r[: len(roll)] == roll).all() for r in rolls)
    with pytest.raises(LapMusicError, match="does not exist"):
        load_rolls([tmp_path / "nope.mid"])
    dataset = SimpleNamespace(key="x", split=lambda name: [roll, roll])
    monkeypatch.setattr("lapmusic.data.registry.load_dataset", lambda key: dataset)
    assert cli.main(["stats", str(tmp_path / "rolls.npz"), "--dataset", "jsb", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["samples"]["pieces"] == 3 and result["inside"]["repeated_frames"] is True
    assert cli.main(["stats", "--json"]) == 2
    assert "--run" in capsys.readouterr().err


def test_stats_of_a_run(tmp_path, capsys):
    from types import SimpleNamespace

    from conftest import random_rolls

    from lapmusic.training.config import TrainConfig
    from lapmusic.training.results import load_run
    from lapmusic.training.train import train

    dataset = SimpleNamespace(key="synthetic", train=random_rolls(8, (10, 20), seed=0, density=0.2),
                              valid=random_rolls(3, (10, 20), seed=1, density=0.2),
                              test=random_rolls(3, (10, 20), seed=2, density=0.2))
    config = TrainConfig.from_settings(dict(dataset="synthetic", hidden=6, init="random", epochs=1, batch_size=4, device="cpu",
                         output="nade", nade_hidden=4))
    train(config, tmp_path / "run", dataset=dataset)
    result = sample_stats(load_run(tmp_path / "run"), n_samples=3, steps=10, dataset=dataset)
    assert result["samples"]["pieces"] == 3 and result["reference"]["pieces"] == 8
    assert result["settings"]["output"] == "nade"


def test_samples_table_and_one_sample_comparison():
    real = [_roll([[C, E, G]] * 4), _roll([[A]] * 2 + [[C]] * 2)]
    sample = _roll([[C], [E], [G], [A]])
    rows, caption = stats.samples_table({"LAE": sample, "random": sample[:2]}, real)
    assert [r["statistic"] for r in rows] == [stats.LABELS[name] for name in stats.STATS]
    repeated = rows[stats.STATS.index("repeated_frames")]
    assert repeated["LAE"] == "0.00" and repeated["real (mean)"] == "0.83"  # real: 3/3 and 2/3 repeats
    assert "first 4 frames of 2 training pieces" in caption
    one = stats.compare_with_pieces(sample, real)
    assert one["samples"]["pieces"] == 1 and one["inside"]["repeated_frames"] is False
