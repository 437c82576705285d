"""Sampling: reproducibility, temperature, polyphony cap, the primer fed to the model, feedback, bad input,
sample_run and `lapmusic generate`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lapmusic.core.errors import LapMusicError
from lapmusic.sampling.primer import parse_primer
from lapmusic.sampling.sample import generate


class FixedLogits(torch.nn.Module):
    """Predicts the same logits for every next frame; records every input it is fed.

    ``h`` counts the frames seen so far, so the test can check that the state is carried along.
    """

    def __init__(self, logits):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.as_tensor(logits, dtype=torch.float32).clone())
        self.inputs: list[torch.Tensor] = []
        self.states: list[int] = []

    def forward(self, x, h=None):
        self.inputs.append(x.detach().clone())
        seen = 0 if h is None else int(h)
        self.states.append(seen)
        logits = self.bias.expand(x.shape[0], x.shape[1], 88)
        return logits, seen + x.shape[1]


class CopyPrevious(torch.nn.Module):
    """Next frame = current frame (logit +8 for keys that sound, -8 for the rest)."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(16.0))

    def forward(self, x, h=None):
        return self.scale * x - 8.0, h


class TinyRNN(torch.nn.Module):
    """A real recurrent model with the PianoRollRNN forward contract."""

    def __init__(self, hidden=16):
        super().__init__()
        torch.manual_seed(0)
        self.rnn = torch.nn.RNN(88, hidden, batch_first=True)
        self.out = torch.nn.Linear(hidden, 88)

    def forward(self, x, h=None):
        y, h = self.rnn(x, h)
        return self.out(y), h


def test_same_seed_same_roll_and_different_seed_differs():
    model = TinyRNN()
    a = generate(model, steps=64, seed=7, n_samples=2)
    b = generate(model, steps=64, seed=7, n_samples=2)
    c = generate(model, steps=64, seed=8, n_samples=2)
    assert a.shape == (2, 64, 88) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert set(np.unique(a)) <= {0, 1}


def test_variations_in_a_batch_differ():
    model = FixedLogits(torch.zeros(88))  # p = 0.5 everywhere
    rolls = generate(model, steps=16, seed=0, n_samples=3)
    assert not np.array_equal(rolls[0], rolls[1])
    assert not np.array_equal(rolls[1], rolls[2])


def test_temperature_zero_is_deterministic_threshold_at_half():
    logits = torch.linspace(-3, 3, 88)
    logits[40] = 0.0  # p exactly 0.5 -> on
    model = FixedLogits(logits)
    a = generate(model, steps=5, temperature=0, seed=None)
    b = generate(model, steps=5, temperature=0, seed=None)
    assert np.array_equal(a, b)
    expected = (logits.numpy() >= 0).astype(np.uint8)
    assert np.array_equal(a[0], np.tile(expected, (5, 1)))


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_bernoulli_rate_matches_tempered_probability(temperature):
    logit = float(np.log(0.3 / 0.7))
    model = FixedLogits(torch.full((88,), logit))
    rolls = generate(model, steps=200, temperature=temperature, seed=1, n_samples=4)
    expected = 1.0 / (1.0 + np.exp(-logit / temperature))
    # 70,400 independent draws: the standard error is under 0.002.
    assert abs(rolls.mean() - expected) < 0.01


def test_max_polyphony_keeps_most_probable_drawn_keys():
    logits = torch.linspace(1.0, 5.0, 88)  # every key likely; higher keys more so
    model = FixedLogits(logits)
    det = generate(model, steps=4, temperature=0, max_polyphony=3)
    assert np.array_equal(np.flatnonzero(det[0, 0]), [85, 86, 87])
    rolls = generate(model, steps=100, temperature=1.0, max_polyphony=5, seed=3, n_samples=3)
    counts = rolls.sum(axis=2)
    assert counts.max() <= 5
    assert (counts == 5).mean() > 0.9  # the cap binds: ~70+ keys are drawn per frame
    # The survivors are the top-5 keys among those drawn, so they are the 5 highest of the drawn set:
    # with p >= 0.73 for every key, almost every frame (~96%) keeps exactly keys 83..87.
    assert (rolls[:, :, 83:].sum(axis=2) == 5).mean() > 0.8


def test_max_polyphony_does_not_add_keys():
    logits = torch.full((88,), -10.0)
    logits[10] = 10.0
    rolls = generate(FixedLogits(logits), steps=10, temperature=0, max_polyphony=4)
    assert np.array_equal(rolls.sum(axis=2), np.ones((1, 10)))


def test_primer_copied_unchanged_and_fed_to_model():
    rng = np.random.default_rng(0)
    primer = (rng.random((6, 88)) < 0.1).astype(np.uint8)
    model = FixedLogits(torch.zeros(88))
    rolls = generate(model, steps=4, primer=primer, seed=0, n_samples=2)
    assert rolls.shape == (2, 10, 88)
    assert np.array_equal(rolls[0, :6], primer) and np.array_equal(rolls[1, :6], primer)
    warm = model.inputs[0]
    assert warm.shape == (2, 6, 88)
    assert np.array_equal(warm[0].numpy(), primer)


def test_each_sampled_frame_is_fed_back_with_the_state():
    model = FixedLogits(torch.zeros(88))
    rolls = generate(model, steps=5, seed=4)
    # First call: one silent frame; then frames 0..3 of the output, one at a time.
    assert len(model.inputs) == 5
    assert model.inputs[0].abs().sum() == 0 and model.inputs[0].shape == (1, 1, 88)
    for t in range(4):
        assert np.array_equal(model.inputs[t + 1][0, 0].numpy(), rolls[0, t])
    assert model.states == [0, 1, 2, 3, 4]


def test_copy_model_sustains_the_primer_chord():
    primer = parse_primer("chord:60,64,67", None)
    rolls = generate(CopyPrevious(), steps=8, primer=primer, temperature=0.5, seed=0)
    assert np.array_equal(rolls[0], np.tile(primer[0], (9, 1)))


def test_training_mode_restored_and_cpu_output():
    model = TinyRNN()
    model.train()
    generate(model, steps=3, seed=0)
    assert model.training
    model.eval()
    generate(model, steps=3, seed=0)
    assert not model.training


def test_progress_reaches_one():
    seen = []
    generate(TinyRNN(), steps=30, seed=0, progress=lambda f, m: seen.append(f))
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(steps=0), "steps"),
        (dict(steps=-3), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(steps=4097), "at most 4,096 frames"),  # lapmusic.sampling.limits.MAX_SAMPLE_FRAMES
        (dict(steps=4, temperature=-0.1), "temperature"),
        (dict(steps=4, temperature=float("nan")), "temperature"),
        (dict(steps=4, max_polyphony=0), "max_polyphony"),
        (dict(steps=4, n_samples=0), "n_samples"),
        (dict(steps=4, primer=np.zeros((3, 87))), "primer"),
        (dict(steps=4, primer=np.full((3, 88), 2)), "primer"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, words):
    with pytest.raises(LapMusicError, match=words):
        generate(TinyRNN(), **kwargs)


def test_wrong_model_output_is_reported():
    class Wrong(torch.nn.Module):
        def forward(self, x, h=None):
            return x[..., :10], h

    with pytest.raises(LapMusicError, match="logits of shape"):
        generate(Wrong(), steps=2)


def test_with_real_piano_roll_rnn():
    from lapmusic.model.config import ModelConfig
    from lapmusic.model.rnn import PianoRollRNN

    model = PianoRollRNN.from_config(ModelConfig(8))
    primer = parse_primer("chord:60,64,67:2", None)
    rolls = generate(model, steps=12, primer=primer, seed=5, max_polyphony=4)
    assert rolls.shape == (1, 14, 88)
    assert rolls[:, 2:].sum(axis=2).max() <= 4
    assert np.array_equal(rolls, generate(model, steps=12, primer=primer, seed=5, max_polyphony=4))


# --------------------------------------------------------------------------------------- run + CLI
class TinyDataset:
    """A stand-in for lapmusic.data.Dataset: a few short random rolls per split."""

    key = "jsb"
    name = "tiny"
    step_seconds = 0.5
    frames_per_beat = None  # unknown, like a benchmark's
    time_signature = None

    def __init__(self):
        rng = np.random.default_rng(0)

        def pieces(n):
            return [(rng.random((int(rng.integers(20, 40)), 88)) < 0.05).astype(np.uint8) for _ in range(n)]

        self.train, self.valid, self.test = pieces(6), pieces(2), pieces(3)

    def split(self, name):
        return getattr(self, name)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real run folder: one epoch of a tiny random-init RNN on TinyDataset (config says dataset jsb)."""
    from lapmusic.training.config import TrainConfig
    from lapmusic.training.train import train

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    config = TrainConfig.from_settings(dict(dataset="jsb", hidden=8, init="random", epochs=1, device="cpu", batch_size=4))
    train(config, run_dir, dataset=TinyDataset())
    return run_dir


@pytest.fixture
def tiny_dataset(monkeypatch):
    """Primers SPLIT:INDEX:FRAMES read TinyDataset instead of the real JSB."""
    import lapmusic.data.registry

    dataset = TinyDataset()
    monkeypatch.setattr(lapmusic.data.registry, "load_dataset", lambda key, progress=None: dataset)
    return dataset


def run_cli(*argv):
    import contextlib
    import io

    from lapmusic.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def test_sample_run_midi_holds_exactly_the_roll(tiny_run, tiny_dataset):
    import io

    import mido
    import pretty_midi

    from lapmusic.data.roll import roll_to_notes
    from lapmusic.sampling.sample import sample_run
    from lapmusic.training.results import load_run

    run = load_run(tiny_run, device="cpu")
    (sample,) = sample_run(run, steps=30, primer="test:1:8", seed=3, temperature=0.7)
    assert sample.primer_frames == 8 and sample.roll.shape == (38, 88)
    assert np.array_equal(sample.roll[:8], tiny_dataset.test[1][:8])
    assert sample.step_seconds == 0.5 and sample.seconds == 19.0
    data = sample.midi_bytes()
    parsed = pretty_midi.PrettyMIDI(io.BytesIO(data))
    got = sorted((n.pitch, round(n.start / 0.5), round(n.end / 0.5)) for i in parsed.instruments for n in i.notes)
    assert got == sorted(roll_to_notes(sample.roll)) and len(got) == sample.notes > 0
    midi_file = mido.MidiFile(file=io.BytesIO(data))
    note_ons = [m for m in midi_file if m.type == "note_on" and m.velocity > 0]
    assert len(note_ons) == sample.notes
    # Separate tracks: the same notes, cut at the primer boundary, on two instruments.
    (split,) = sample_run(run, steps=30, primer="test:1:8", seed=3, temperature=0.7, separate_tracks=True)
    assert np.array_equal(split.roll, sample.roll)
    assert [i.name for i in split.midi.instruments] == ["primer", "continuation"]


def test_cli_generate_writes_playable_midi_wav_and_json(tiny_run, tmp_path):

    import mido
    import pretty_midi

    from lapmusic.data.roll import roll_to_notes
    from lapmusic.sampling.audio import read_wav
    from lapmusic.sampling.sample import sample_run
    from lapmusic.training.results import load_run

    out, wav, html = tmp_path / "s.mid", tmp_path / "s.wav", tmp_path / "s.html"
    code, stdout, _ = run_cli("generate", tiny_run, "--steps", 24, "--primer", "chord:C4,E4,G4:2", "--seed", 11,
                              "--max-polyphony", 6, "--out", out, "--wav", wav, "--sample-rate", 44100,
                              "--html", html, "--json")
    assert code == 0
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["midi"] == str(out) and result["wav"] == str(wav) and result["html"] == str(html)
    assert result["frames"] == 26 and result["primer_frames"] == 2
    assert result["duration_seconds"] == pytest.approx(13.0)  # 26 frames x 0.5 s (JSB's step)
    assert result["renderer"] in ("fluidsynth", "pretty_midi")
    # The files hold what the same seed gives in the library.
    (expected,) = sample_run(load_run(tiny_run, device="cpu"), steps=24, primer="chord:C4,E4,G4:2", seed=11,
                             max_polyphony=6)
    assert expected.roll[2:].sum(axis=1).max() <= 6
    parsed = pretty_midi.PrettyMIDI(str(out))
    got = sorted((n.pitch, round(n.start / 0.5), round(n.end / 0.5)) for i in parsed.instruments for n in i.notes)
    assert got == sorted(roll_to_notes(expected.roll)) and len(got) == result["notes"]
    assert len(mido.MidiFile(str(out)).tracks) >= 1
    samples, rate = read_wav(wav.read_bytes())
    assert rate == 44100 and np.isfinite(samples).all() and np.abs(samples).max() > 0.1
    assert len(samples) >= 13.0 * 44100
    assert "plotly" in html.read_text()[:5000].lower()


def test_cli_generate_human_output(tiny_run, tmp_path):
    code, stdout, _ = run_cli("generate", tiny_run, "--steps", 4, "--out", tmp_path / "x.mid")
    assert code == 0 and stdout.startswith(f"wrote {tmp_path / 'x.mid'}")


@pytest.mark.parametrize(
    "args, words",
    [
        (["--steps", 0], "--steps must be at least 1"),
        (["--temperature", -1], "--temperature must be"),
        (["--max-polyphony", 0], "--max-polyphony"),
        (["--primer", "test:3:4"], "has 3 pieces"),
        (["--primer", "test:0:500"], "frames long"),
        (["--primer", "chord:200"], "off the 88-key piano"),
        (["--step-seconds", 0], "--step-seconds"),
        (["--program", 128], "--program"),
    ],
)
def test_cli_generate_bad_input(tiny_run, tiny_dataset, tmp_path, args, words):
    code, _, err = run_cli("generate", tiny_run, "--out", tmp_path / "x.mid", *args)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("error: ") and words in err
    assert not (tmp_path / "x.mid").exists()


def test_cli_generate_bad_run_folders(tiny_run, tmp_path):
    import shutil

    import torch

    code, _, err = run_cli("generate", tmp_path / "missing", "--out", tmp_path / "x.mid")
    assert code == 2 and "does not exist" in err
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_run, corrupt)
    (corrupt / "best.pt").write_bytes(b"not a checkpoint at all")
    code, _, err = run_cli("generate", corrupt, "--out", tmp_path / "x.mid")
    assert code == 2 and "error:" in err and "best.pt" in err
    foreign = tmp_path / "foreign"
    shutil.copytree(tiny_run, foreign)
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign / "best.pt")
    code, _, err = run_cli("generate", foreign, "--out", tmp_path / "x.mid")
    assert code == 2 and "not a lapmusic checkpoint" in err
    assert not (tmp_path / "x.mid").exists()
