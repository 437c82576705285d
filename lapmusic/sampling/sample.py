"""Ancestral sampling from a trained piano-roll RNN: :func:`generate` (rolls) and :func:`sample_run` (MIDI).

The model is anything with the ``PianoRollRNN.forward`` contract ``forward(x (B, T, 88), h=None) ->
(logits (B, T, 88), h)``, ``logits[:, t]`` predicting frame ``t + 1``. A
:class:`~lapmusic.model.rnn.PianoRollRNN` with a NADE output draws each frame key by key instead
(:meth:`lapmusic.model.nade.NADEOutput.sample`: temperature on every conditional, the polyphony cap
switching off the keys above the first ``max_polyphony`` drawn ones). Primers: :mod:`lapmusic.sampling.primer`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from lapmusic import N_KEYS
from lapmusic.core.errors import LapMusicError
from lapmusic.core.progress import Progress
from lapmusic.data.files import SPLITS
from lapmusic.model.rnn import PianoRollRNN
from lapmusic.sampling.limits import MAX_SAMPLE_FRAMES, MAX_SAMPLES, check_request
from lapmusic.sampling.meter import output_meter, primer_grid, user_dataset
from lapmusic.sampling.primer import Primer, load_primer


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
    progress: Progress | None = None,
    threshold: float = 0.5,
) -> np.ndarray:
    """Sample ``n_samples`` continuations of ``steps`` frames each, frame by frame.

    Each step turns the last logits ``l`` into key probabilities ``sigmoid(l / temperature)``, draws
    every key from its own Bernoulli, optionally keeps only the ``max_polyphony`` most probable drawn
    keys, and feeds the frame back. A NADE output draws each frame key by key from its conditionals
    instead. The hidden state is first warmed on the primer (or on one silent frame without one).

    Parameters
    ----------
    model : torch.nn.Module
        A module with ``forward(x (B, T, 88), h) -> (logits (B, T, 88), h)``, e.g. a
        :class:`lapmusic.model.rnn.PianoRollRNN` (with any output layer).
    steps : int
        Number of frames to generate, ``1 <= steps <= MAX_SAMPLE_FRAMES``
        (:mod:`lapmusic.sampling.limits`; a typo should not start a day-long loop).
    temperature : float, default=1.0
        The logits are divided by it before the sigmoid: higher is wilder, lower is tamer. ``0`` is
        deterministic: a key sounds when its probability is ``>= threshold``.
    primer : array-like of shape (k, 88), optional
        0/1 frames copied unchanged into the first ``k`` output frames and used to warm the hidden
        state; ``None`` (or ``k = 0``) starts from silence. See :func:`lapmusic.sampling.primer.parse_primer`.
    max_polyphony : int, optional
        Keep at most this many keys per generated frame: the most probable of the drawn keys
        (``None``: no limit).
    seed : int, optional
        Same seed, same model, same device: the same samples. ``None`` draws a fresh seed.
    n_samples : int, default=1
        Number of independent variations, drawn in one batch, ``1 <= n_samples <= MAX_SAMPLES``
        (:mod:`lapmusic.sampling.limits`).
    device : str or torch.device, optional
        Where the computation runs (default: the device of the model's parameters).
    progress : callable, optional
        ``progress(fraction, message)``, called about every 1 % of the steps and at the end.
    threshold : float, default=0.5
        With ``temperature = 0``, a key sounds when its probability is ``>= threshold``, ``0 < threshold
        < 1`` (``final.json``'s ``threshold``, chosen on the validation split, gives denser greedy frames).
        A NADE output decides each conditional at 0.5.

    Returns
    -------
    ndarray of shape (n_samples, k + steps, 88)
        uint8 0/1 piano rolls, the primer first.

    Raises
    ------
    LapMusicError
        A bad ``steps``, ``n_samples``, ``temperature``, ``threshold`` or ``max_polyphony``, a primer that
        is not a 0/1 ``(k, 88)`` array, or a model whose logits are not ``(B, T, 88)``.
    """
    steps = _check_int("steps", steps, minimum=1)
    if steps > MAX_SAMPLE_FRAMES:
        raise LapMusicError(f"steps must be at most {MAX_SAMPLE_FRAMES:,} frames, got {steps:,}")
    n_samples = _check_int("n_samples", n_samples, minimum=1)
    if n_samples > MAX_SAMPLES:
        raise LapMusicError(f"n_samples must be at most {MAX_SAMPLES} samples at once, got {n_samples:,}")
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
                    frame = draw_frame(last, temperature, max_polyphony, generator, threshold)
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


def draw_frame(
    logits: torch.Tensor, temperature: float, max_polyphony: int | None, generator: torch.Generator,
    threshold: float = 0.5,
) -> torch.Tensor:
    """One frame per row drawn from independent Bernoullis, ``x_k ~ Bernoulli(sigmoid(l_k / temperature))``.

    Parameters
    ----------
    logits : torch.Tensor of shape (B, 88)
        The logits ``l`` of the next frame.
    temperature : float
        ``>= 0``; ``0`` draws nothing at random: every key with probability ``>= threshold`` sounds.
    max_polyphony : int or None
        Keep at most this many drawn keys per frame, those with the largest logits.
    generator : torch.Generator
        Source of the uniform numbers (on the logits' device).
    threshold : float, default=0.5
        The greedy (``temperature = 0``) decision threshold, ``0 < threshold < 1``.

    Returns
    -------
    torch.Tensor of shape (B, 88)
        uint8 0/1 frames.
    """
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


# --------------------------------------------------------------------------------------- from a run
@dataclass
class Sample:
    """One generated piece: the roll, where the primer ends, and its MIDI rendering.

    Attributes
    ----------
    roll : ndarray of shape (primer_frames + steps, 88)
        uint8 0/1 piano roll, the primer first.
    primer_frames : int
        ``k``, the frames copied from the primer.
    step_seconds : float
        Seconds per frame when played.
    midi : pretty_midi.PrettyMIDI
        The roll as MIDI (held frames merged into notes).
    """

    roll: np.ndarray
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
        """The Standard MIDI File's bytes (what ``lapmusic generate --out`` writes)."""
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
    progress: Progress | None = None,
    threshold: float = 0.5,
) -> list[Sample]:
    """Sample from a loaded run and turn every variation into MIDI.

    Parameters
    ----------
    run : lapmusic.training.results.LoadedRun
        A run from :func:`lapmusic.training.results.load_run`: its ``model``, ``device`` and
        ``config.dataset`` are used.
    steps, temperature, max_polyphony, seed, n_samples, progress, threshold
        As for :func:`generate`.
    primer : str or Primer or array-like of shape (k, 88) or None, default="none"
        A specification for :func:`lapmusic.sampling.primer.load_primer` (``SPLIT:INDEX:FRAMES`` pieces
        come from the run's dataset, MIDI files are read on its grid), a loaded primer or a 0/1 roll.
    step_seconds : float, optional
        Seconds per frame in the MIDI (default: a MIDI primer's tempo, else the dataset's suggested step,
        else 0.25). The time signature is a MIDI primer's, else the dataset's, else 4/4
        (:func:`lapmusic.sampling.meter.output_meter`).
    program : int, default=0
        General MIDI program 0..127 of the notes (0: acoustic grand piano).
    velocity : int, default=90
        MIDI velocity 1..127 of every note.
    separate_tracks : bool, default=False
        Put the primer and the continuation on two MIDI instruments ("primer", "continuation").
    dataset : lapmusic.data.dataset.Dataset, optional
        The run's dataset, already loaded (saves loading it again for a piece primer).

    Returns
    -------
    list of Sample
        ``n_samples`` samples, each with its roll and MIDI.

    Raises
    ------
    LapMusicError
        A bad primer (:func:`lapmusic.sampling.primer.load_primer`), ``step_seconds``, ``program`` or
        ``velocity``, a request over the limits (:func:`lapmusic.sampling.limits.check_request`), or any
        refusal of :func:`generate`.
    """
    from lapmusic.data.midi import roll_to_midi

    dataset_key = getattr(getattr(run, "config", None), "dataset", None)
    if not (step_seconds is None or isinstance(step_seconds, (int, float)) and math.isfinite(step_seconds)
            and step_seconds > 0):
        raise LapMusicError(f"step_seconds must be a positive number of seconds, got {step_seconds!r}")
    spec = (primer or "none") if isinstance(primer, str) or primer is None else None
    if spec is not None and dataset is None and dataset_key and spec.split(":", 1)[0].lower() in SPLITS:
        from lapmusic.training.build import load_run_dataset

        # Refused when the dataset changed since the run was trained: the piece would not be the one meant.
        dataset = load_run_dataset(dataset_key, getattr(run, "run_dir", None), purpose="take a primer from")
    dataset = user_dataset(dataset_key, dataset)
    if spec is not None:
        primer = load_primer(spec, dataset_key, dataset=dataset, frames_per_beat=primer_grid(dataset_key, dataset))
    elif not isinstance(primer, Primer):
        primer = Primer(primer)
    meter = output_meter(dataset_key, dataset=dataset, primer=primer, step_seconds=step_seconds)
    primer_roll = primer.roll
    k = 0 if primer_roll is None else int(np.asarray(primer_roll).shape[0])
    check_request(_check_int("steps", steps, minimum=1), meter.step_seconds, k,
                  _check_int("n_samples", n_samples, minimum=1))
    if not 0 <= int(program) <= 127:
        raise LapMusicError(f"program must be a General MIDI program 0..127 (0 = piano), got {program}")
    if not 1 <= int(velocity) <= 127:
        raise LapMusicError(f"velocity must be 1..127, got {velocity}")
    rolls = generate(run.model, steps=steps, temperature=temperature, primer=primer_roll,
                     max_polyphony=max_polyphony, seed=seed, n_samples=n_samples,
                     device=getattr(run, "device", None), progress=progress, threshold=threshold)
    samples = []
    for roll in rolls:
        midi = roll_to_midi(roll, program=int(program), velocity=int(velocity),
                            split_at=k if separate_tracks and k > 0 else None, **meter.midi_options)
        samples.append(Sample(roll=roll, primer_frames=k, step_seconds=meter.step_seconds, midi=midi))
    return samples


# --------------------------------------------------------------------------------------- checks
def _check_int(name: str, value, *, minimum: int) -> int:
    """``value`` as an int, or LapMusicError naming ``name`` unless it is a whole number ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise LapMusicError(f"{name} must be a whole number, got {value!r}")
    if value < minimum:
        raise LapMusicError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _check_temperature(value) -> float:
    """``value`` as a float, or LapMusicError unless it is a finite number ``>= 0``."""
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
    """The primer as a uint8 ``(k, 88)`` roll (None for none or ``k = 0``), or LapMusicError."""
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
