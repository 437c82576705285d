"""Ancestral sampling from a trained piano-roll RNN, and the primers that start a sample.

The model is anything with the ``PianoRollRNN.forward`` contract::

    forward(x: (B, T, 88) float, h=None) -> (logits: (B, T, 88), h)

where ``logits[:, t]`` predicts frame ``t + 1``. Sampling warms the hidden state on a primer (or on one
silent frame when there is none), then repeats: divide the last logits by a temperature, draw every key
from its own Bernoulli, optionally keep only the most probable drawn keys, and feed the frame back.

A :class:`lapmusic.model.PianoRollRNN` with ``output="nade"`` draws each frame key by key from its NADE
instead (:meth:`lapmusic.nade.NADEOutput.sample`: temperature on every conditional, the polyphony cap
switching off the keys above the first ``max_polyphony`` drawn ones).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from lapmusic import HIGHEST_PITCH, LOWEST_PITCH, N_KEYS
from lapmusic.core.errors import LapMusicError
from lapmusic.data.files import SPLITS
from lapmusic.model.rnn import PianoRollRNN

MAX_STEPS = 100_000
"""Longest sample accepted (about 7 hours at 0.25 s a frame): a typo should not start a day-long loop."""

ProgressFn = Callable[[float, str], None]


# --------------------------------------------------------------------------------------- sampling
def generate(
    model: torch.nn.Module,
    *,
    steps: int,
    temperature: float = 1.0,
    primer: np.ndarray | None = None,
    max_polyphony: int | None = None,
    seed: int | None = None,
    n_samples: int = 1,
    device: str | torch.device | None = None,
    progress: ProgressFn | None = None,
    threshold: float = 0.5,
) -> np.ndarray:
    """Sample ``n_samples`` continuations of ``steps`` frames each.

    Args:
        model: a module with ``forward(x (B, T, 88), h) -> (logits (B, T, 88), h)``.
        steps: number of frames to generate (>= 1).
        temperature: logits are divided by it before the sigmoid; ``0`` is deterministic
            (a key sounds when its probability is >= 0.5). Higher is wilder, lower is tamer.
        primer: ``(k, 88)`` 0/1 array copied unchanged into the first ``k`` output frames and used to
            warm the hidden state; ``None`` (or ``k = 0``) starts from silence.
        max_polyphony: keep at most this many keys per generated frame: the most probable of the
            drawn keys (``None``: no limit).
        seed: same seed, same model, same device -> the same samples. ``None`` draws a fresh seed.
        n_samples: number of independent variations drawn in one batch.
        device: where the computation runs; defaults to the device of the model's parameters.
        progress: optional ``progress(fraction, message)`` callback.
        threshold: with ``temperature = 0``, a key sounds when its probability is ``>= threshold``
            (``final.json``'s ``threshold``, chosen on the validation split, gives denser greedy frames).

    Returns:
        ``(n_samples, k + steps, 88)`` uint8 array of 0/1.
    """
    steps = _check_int("steps", steps, minimum=1)
    if steps > MAX_STEPS:
        raise LapMusicError(f"steps must be at most {MAX_STEPS:,} frames, got {steps:,}")
    n_samples = _check_int("n_samples", n_samples, minimum=1)
    temperature = _check_temperature(temperature)
    if not (isinstance(threshold, (int, float)) and 0 < threshold < 1):
        raise LapMusicError(f"threshold must be a probability between 0 and 1, got {threshold!r}")
    if max_polyphony is not None:
        max_polyphony = _check_int("max_polyphony", max_polyphony, minimum=1)
        if max_polyphony >= N_KEYS:
            max_polyphony = None  # no frame can exceed 88 keys: the limit is a no-op
    primer_roll = _check_primer(primer)
    k = 0 if primer_roll is None else primer_roll.shape[0]

    param = next(iter(model.parameters()), None)
    dev = torch.device(device) if device is not None else (param.device if param is not None else torch.device("cpu"))
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32

    generator = torch.Generator(device=dev)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = torch.zeros((n_samples, k + steps, N_KEYS), dtype=torch.uint8, device=dev)
            if primer_roll is not None:
                warm = torch.as_tensor(primer_roll, device=dev)
                out[:, :k] = warm
                warm_input = warm.to(dtype).unsqueeze(0).expand(n_samples, k, N_KEYS)
            else:
                # No primer: condition the first frame on one frame of silence.
                warm_input = torch.zeros((n_samples, 1, N_KEYS), dtype=dtype, device=dev)
            # A head that draws whole frames (NADE) gets the states; independent keys are drawn from the logits.
            nade = model.head if isinstance(model, PianoRollRNN) and not model.head.independent_keys else None
            step = model.hidden_states if nade is not None else model
            logits, hidden = step(warm_input, None)  # NADE: the recurrent states, not logits
            last = logits[:, -1] if nade is not None else _last_logits(logits, n_samples)
            read = warm_input[:, -1]  # the frame behind `last` (NADE's previous-frame skip reads it)
            looked_back = nade.start_history(warm_input) if nade is not None else {}  # a copy window's frames
            report_every = max(1, steps // 100)
            for t in range(steps):
                if nade is None:
                    frame = _draw_frame(last, temperature, max_polyphony, generator, threshold)
                else:  # NADE decodes key by key at its conditionals (threshold 0.5 when greedy)
                    frame = nade.sample(last, temperature, max_polyphony, generator, inputs=read, **looked_back)
                out[:, k + t] = frame
                if t + 1 < steps:
                    read = frame.to(dtype)
                    if nade is not None:
                        looked_back = nade.advance_history(looked_back, read)
                    logits, hidden = step(read.unsqueeze(1), hidden)
                    last = logits[:, -1] if nade is not None else _last_logits(logits, n_samples)
                if progress is not None and ((t + 1) % report_every == 0 or t + 1 == steps):
                    progress((t + 1) / steps, f"sampled {t + 1}/{steps} frames")
            return out.cpu().numpy()
    finally:
        model.train(was_training)


def _last_logits(logits: torch.Tensor, n_samples: int) -> torch.Tensor:
    """``(B, T, 88)`` model output -> ``(B, 88)`` logits of the next frame, checked."""
    if logits.dim() != 3 or logits.shape[0] != n_samples or logits.shape[2] != N_KEYS:
        raise LapMusicError(
            f"the model returned logits of shape {tuple(logits.shape)}, expected ({n_samples}, T, {N_KEYS}); "
            "is this a piano-roll model?"
        )
    return logits[:, -1]


def _draw_frame(
    logits: torch.Tensor, temperature: float, max_polyphony: int | None, generator: torch.Generator,
    threshold: float = 0.5,
) -> torch.Tensor:
    """``(B, 88)`` logits -> ``(B, 88)`` uint8 frame drawn from independent Bernoullis (``temperature = 0``:
    every key with probability ``>= threshold``)."""
    if temperature == 0.0:
        drawn = logits >= math.log(threshold / (1 - threshold))  # sigmoid(l) >= t  <=>  l >= logit(t)
    else:
        probs = torch.sigmoid(logits / temperature)
        uniform = torch.rand(probs.shape, generator=generator, device=probs.device, dtype=probs.dtype)
        drawn = uniform < probs
    if max_polyphony is not None:
        # Rank drawn keys by probability (monotonic in the logits at any temperature) and keep the top K.
        scores = logits.masked_fill(~drawn, float("-inf"))
        top = torch.topk(scores, max_polyphony, dim=1).indices
        keep = torch.zeros_like(drawn).scatter_(1, top, True)
        drawn = drawn & keep
    return drawn.to(torch.uint8)


# --------------------------------------------------------------------------------------- primers
def parse_primer(spec: str | None, dataset_key: str | None, *, dataset=None) -> np.ndarray | None:
    """Turn a primer specification into a ``(k, 88)`` uint8 roll, or ``None`` for no primer.

    Accepted forms:
        ``none``                  start from silence.
        ``SPLIT:INDEX:FRAMES``    the first FRAMES frames of piece INDEX (from 0) of split train, valid or
                                  test of the run's dataset, e.g. ``test:0:16``.
        ``chord:P1,P2,...``       one frame holding these pitches, given as MIDI numbers (21-108) or note
                                  names (``C4``, ``Eb4``, ``F#3``), e.g. ``chord:60,64,67``.
        ``chord:P1,P2,...:FRAMES``  the same chord held for FRAMES frames.

    ``dataset`` (an already loaded ``lapmusic.data.Dataset``) avoids loading ``dataset_key`` again.
    """
    text = (spec or "none").strip()
    if text.lower() in ("", "none", "silence"):
        return None
    if text.lower().startswith("chord:"):
        return _parse_chord(text[len("chord:"):], text)
    parts = text.split(":")
    if len(parts) != 3 or parts[0].lower() not in SPLITS:
        raise LapMusicError(
            f"primer {text!r} is not understood; use none, SPLIT:INDEX:FRAMES (e.g. test:0:16) "
            "or chord:60,64,67"
        )
    split = parts[0].lower()
    index = _parse_int_field(parts[1], "piece index", text, minimum=0)
    frames = _parse_int_field(parts[2], "number of frames", text, minimum=1)
    if dataset is None:
        if not dataset_key:
            raise LapMusicError(
                f"primer {text!r} needs a dataset, but none is known for this run; use none or chord:... instead"
            )
        from lapmusic.data.registry import load_dataset  # imported here: loading a dataset is only needed for this form

        dataset = load_dataset(dataset_key)
    pieces = dataset.split(split)
    if index >= len(pieces):
        raise LapMusicError(
            f"primer {text!r}: the {split} split of {getattr(dataset, 'key', dataset_key)} has {len(pieces)} "
            f"pieces, so INDEX must be 0..{len(pieces) - 1}"
        )
    piece = np.asarray(pieces[index])
    if frames > piece.shape[0]:
        raise LapMusicError(
            f"primer {text!r}: {split} piece {index} is only {piece.shape[0]} frames long; "
            f"ask for at most {piece.shape[0]} frames"
        )
    return (piece[:frames] > 0).astype(np.uint8)


_NOTE_NAME = re.compile(r"^([A-Ga-g])([#b]*)(-?\d+)$")
_PITCH_CLASS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def _parse_chord(body: str, spec: str) -> np.ndarray:
    notes_text, _, frames_text = body.partition(":")
    frames = _parse_int_field(frames_text, "number of frames", spec, minimum=1) if frames_text else 1
    tokens = [token.strip() for token in notes_text.split(",") if token.strip()]
    if not tokens:
        raise LapMusicError(f"primer {spec!r} names no pitches; write e.g. chord:60,64,67 or chord:C4,E4,G4")
    frame = np.zeros(N_KEYS, dtype=np.uint8)
    for token in tokens:
        pitch = _pitch_number(token, spec)
        if not LOWEST_PITCH <= pitch <= HIGHEST_PITCH:
            raise LapMusicError(
                f"primer {spec!r}: pitch {token} ({pitch}) is off the 88-key piano; "
                f"use MIDI pitches {LOWEST_PITCH}-{HIGHEST_PITCH} (A0-C8)"
            )
        frame[pitch - LOWEST_PITCH] = 1
    return np.repeat(frame[None, :], frames, axis=0)


def _pitch_number(token: str, spec: str) -> int:
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    match = _NOTE_NAME.match(token)
    if not match:
        raise LapMusicError(
            f"primer {spec!r}: {token!r} is neither a MIDI pitch number nor a note name like C4, Eb4 or F#3"
        )
    letter, accidentals, octave = match.groups()
    offset = accidentals.count("#") - accidentals.count("b")
    return 12 * (int(octave) + 1) + _PITCH_CLASS[letter.upper()] + offset  # C4 = 60


def _parse_int_field(text: str, what: str, spec: str, *, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise LapMusicError(f"primer {spec!r}: the {what} {text!r} is not a whole number") from None
    if value < minimum:
        raise LapMusicError(f"primer {spec!r}: the {what} must be at least {minimum}, got {value}")
    return value


# --------------------------------------------------------------------------------------- from a run
def suggested_step_seconds(dataset_key: str | None, dataset=None) -> float:
    """Playback duration of one frame for a dataset: its own suggestion, else ``DEFAULT_STEP_SECONDS``."""
    from lapmusic.data.catalog import DATASETS
    from lapmusic.data.midi import DEFAULT_STEP_SECONDS

    if dataset is not None and dataset.step_seconds:
        return float(dataset.step_seconds)
    info = DATASETS.get(dataset_key or "")
    return float(info.step_seconds) if info is not None else DEFAULT_STEP_SECONDS


@dataclass
class Sample:
    """One generated piece: the roll, where the primer ends, and its MIDI rendering."""

    roll: np.ndarray  # (primer_frames + steps, 88) uint8
    primer_frames: int
    step_seconds: float
    midi: "pretty_midi.PrettyMIDI"  # noqa: F821 - imported lazily

    @property
    def notes(self) -> int:
        """Number of notes in the MIDI (held frames merged)."""
        return sum(len(instrument.notes) for instrument in self.midi.instruments)

    @property
    def seconds(self) -> float:
        """Duration of the roll when played (frames x step)."""
        return self.roll.shape[0] * self.step_seconds

    def midi_bytes(self) -> bytes:
        from lapmusic.data.midi import midi_to_bytes

        return midi_to_bytes(self.midi)


def sample_run(
    run,
    *,
    steps: int,
    temperature: float = 1.0,
    primer: str | np.ndarray | None = "none",
    max_polyphony: int | None = None,
    seed: int | None = None,
    n_samples: int = 1,
    step_seconds: float | None = None,
    program: int = 0,
    velocity: int = 90,
    separate_tracks: bool = False,
    dataset=None,
    progress: ProgressFn | None = None,
    threshold: float = 0.5,
) -> list[Sample]:
    """Sample from a loaded run (``lapmusic.results.load_run``) and turn every variation into MIDI.

    ``primer`` is a specification for :func:`parse_primer` (pieces come from the run's dataset) or an
    array. ``step_seconds`` defaults to the dataset's suggested playback step. With ``separate_tracks``
    the primer and the continuation go on two MIDI instruments ("primer", "continuation").
    """
    from lapmusic.data.midi import roll_to_midi

    dataset_key = getattr(getattr(run, "config", None), "dataset", None)
    if isinstance(primer, str) or primer is None:
        spec = primer or "none"
        if dataset is None and spec.split(":", 1)[0].lower() in SPLITS:
            from lapmusic.data.registry import load_dataset

            dataset = load_dataset(dataset_key) if dataset_key else None
        primer_roll = parse_primer(spec, dataset_key, dataset=dataset)
    else:
        primer_roll = primer
    if step_seconds is None:
        step_seconds = suggested_step_seconds(dataset_key, dataset)
    if not (isinstance(step_seconds, (int, float)) and math.isfinite(step_seconds) and step_seconds > 0):
        raise LapMusicError(f"step_seconds must be a positive number of seconds, got {step_seconds!r}")
    if not 0 <= int(program) <= 127:
        raise LapMusicError(f"program must be a General MIDI program 0..127 (0 = piano), got {program}")
    if not 1 <= int(velocity) <= 127:
        raise LapMusicError(f"velocity must be 1..127, got {velocity}")
    rolls = generate(run.model, steps=steps, temperature=temperature, primer=primer_roll,
                     max_polyphony=max_polyphony, seed=seed, n_samples=n_samples,
                     device=getattr(run, "device", None), progress=progress, threshold=threshold)
    k = 0 if primer_roll is None else int(np.asarray(primer_roll).shape[0])
    samples = []
    for roll in rolls:
        midi = roll_to_midi(roll, step_seconds=float(step_seconds), program=int(program), velocity=int(velocity),
                            split_at=k if separate_tracks and k > 0 else None)
        samples.append(Sample(roll=roll, primer_frames=k, step_seconds=float(step_seconds), midi=midi))
    return samples


# --------------------------------------------------------------------------------------- checks
def _check_int(name: str, value, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise LapMusicError(f"{name} must be a whole number, got {value!r}")
    if value < minimum:
        raise LapMusicError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _check_temperature(value) -> float:
    try:
        temperature = float(value)
    except (TypeError, ValueError):
        raise LapMusicError(f"temperature must be a number >= 0, got {value!r}") from None
    if not math.isfinite(temperature) or temperature < 0:
        raise LapMusicError(
            f"temperature must be a finite number >= 0 (0 = deterministic, 1 = the model's own "
            f"probabilities), got {value!r}"
        )
    return temperature


def _check_primer(primer) -> np.ndarray | None:
    if primer is None:
        return None
    roll = np.asarray(primer)
    if roll.ndim != 2 or roll.shape[1] != N_KEYS:
        raise LapMusicError(f"the primer must be a (frames, {N_KEYS}) piano roll, got shape {roll.shape}")
    if roll.shape[0] == 0:
        return None
    if not np.all((roll == 0) | (roll == 1)):
        raise LapMusicError("the primer must hold only 0 and 1 (a binary piano roll)")
    return roll.astype(np.uint8)
