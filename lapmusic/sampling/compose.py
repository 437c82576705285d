"""Sample a loaded run, render each variation to MIDI (and audio), and keep it in the run folder.

What the app's Samples page calls on every click: :func:`sample_variations` draws one or more variations in
one batch, bounded by :mod:`lapmusic.sampling.limits` before any sampling, written in the meter of
:mod:`lapmusic.sampling.meter`, and saved with :func:`lapmusic.sampling.store.save_sample`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lapmusic.sampling.limits import check_request
from lapmusic.sampling.store import SavedSample, save_sample


def variation_name(name: str, index: int, count: int) -> str:
    """The saved name of variation ``index`` (from 0) of ``count``: ``name`` for one, else ``name-v1``..."""
    return name if count == 1 else f"{name}-v{index + 1}"


def sample_variations(
    loaded,
    *,
    steps: int,
    temperature: float,
    seed: int,
    step_seconds: float,
    variations: int = 1,
    primer_spec: str = "none",
    primer: np.ndarray | None = None,
    max_polyphony: int | None = None,
    frames_per_beat: int | None = None,
    time_signature: tuple[int, int] | None = None,
    program: int = 0,
    velocity: int = 90,
    render_audio: bool = True,
    save: bool = True,
    name: str | None = None,
) -> list[tuple[SavedSample | None, dict]]:
    """Sample ``variations`` continuations from a loaded run in one batch, render and save each.

    The same ``seed``, ``primer``, ``temperature`` and ``variations`` given to two runs draw their keys from
    the same uniform random numbers, so the difference you hear is the model's.

    Parameters
    ----------
    loaded : lapmusic.training.results.LoadedRun
        From :func:`lapmusic.training.results.load_run`.
    steps, temperature, seed, max_polyphony
        As for :func:`lapmusic.sampling.sample.generate`.
    step_seconds : float
        Seconds per frame in the MIDI and the audio.
    variations : int, default=1
        Samples drawn at once, 1 to :data:`lapmusic.sampling.limits.MAX_VARIATIONS`.
    primer_spec : str, default="none"
        The primer's specification, recorded in each sample's ``.json``.
    primer : ndarray of shape (k, 88), optional
        The primer's roll (:func:`lapmusic.sampling.primer.load_primer`).
    frames_per_beat, time_signature
        The meter written into the MIDI (:class:`lapmusic.sampling.meter.OutputMeter`).
    program, velocity : int
        General MIDI program 0..127 and velocity 1..127 of every note.
    render_audio, save : bool, default=True
        Render a WAV (:func:`lapmusic.sampling.audio.render_wav`); write each sample (:func:`save_sample`).
    name : str, optional
        The samples' file stem (default: a new one; a pair of runs shares one name); variations add
        ``-v1``, ``-v2``... (:func:`variation_name`).

    Returns
    -------
    list of (SavedSample or None, dict)
        One per variation: the saved sample (None when ``save=False``) and its data: ``roll``, ``midi``
        (bytes), ``wav`` (bytes or None), ``primer_frames``, ``silent``, ``warning``, ``meta`` and
        ``step_seconds``.

    Raises
    ------
    LapMusicError
        A request over the limits (:func:`lapmusic.sampling.limits.check_request`), or any refusal of
        :func:`lapmusic.sampling.sample.generate`, :func:`lapmusic.data.midi.roll_to_midi` or
        :func:`save_sample`.
    """
    from lapmusic.data.midi import midi_to_bytes, roll_to_midi
    from lapmusic.sampling.sample import generate
    from lapmusic.sampling.store import new_sample_name

    k = 0 if primer is None else int(np.asarray(primer).shape[0])
    check_request(int(steps), float(step_seconds), k, int(variations))
    rolls = generate(loaded.model, steps=steps, temperature=temperature, primer=primer,
                     max_polyphony=max_polyphony, seed=seed, n_samples=int(variations), device=loaded.device)
    name = name or new_sample_name(seed, temperature)
    config = loaded.config
    out = []
    for index, roll in enumerate(rolls):
        midi = roll_to_midi(roll, step_seconds=float(step_seconds), split_at=k if k else None, program=int(program),
                            velocity=int(velocity), frames_per_beat=frames_per_beat, time_signature=time_signature)
        midi_data = midi_to_bytes(midi)
        wav, silent, warning, renderer = None, not bool(roll[k:].any()), None, None
        if render_audio:
            from lapmusic.sampling.audio import render_wav

            audio = render_wav(midi, min_seconds=len(roll) * float(step_seconds))
            wav, silent, warning, renderer = audio.wav, audio.silent, audio.warning, audio.renderer
        meta = {
            "run": Path(loaded.run_dir).name,
            "init": config.init,
            "dataset": config.dataset,
            "hidden": config.model.hidden,
            "seed": int(seed),
            "variation": index + 1,
            "variations": int(variations),
            "primer": primer_spec,
            "primer_frames": k,
            "temperature": float(temperature),
            "steps": int(steps),
            "max_polyphony": max_polyphony,
            "step_seconds": float(step_seconds),
            "time_signature": list(time_signature) if time_signature else None,
            "tempo_qpm": round(float(midi.get_tempo_changes()[1][0]), 3),
            "program": int(program),
            "velocity": int(velocity),
            "epoch": int(loaded.epoch),
            "checkpoint": loaded.checkpoint,
            "notes": int(sum(len(i.notes) for i in midi.instruments)),
            "renderer": renderer,
        }
        data = {"roll": roll, "midi": midi_data, "wav": wav, "primer_frames": k, "silent": silent,
                "warning": warning, "meta": meta, "step_seconds": float(step_seconds)}
        saved = None
        if save:
            saved = save_sample(loaded.run_dir, roll, midi=midi_data, wav=wav, meta=meta,
                                name=variation_name(name, index, len(rolls)))
            data["meta"] = saved.meta
        out.append((saved, data))
    return out


def sample_to_run(loaded, **kwargs) -> tuple[SavedSample | None, dict]:
    """One sample: ``sample_variations(loaded, variations=1, **kwargs)[0]``.

    Parameters
    ----------
    loaded : lapmusic.training.results.LoadedRun
        From :func:`lapmusic.training.results.load_run`.
    **kwargs
        As for :func:`sample_variations` (but ``variations``).

    Returns
    -------
    saved : SavedSample or None
        None when ``save=False``.
    data : dict
        As for :func:`sample_variations`.

    Raises
    ------
    LapMusicError
        As for :func:`sample_variations`.
    """
    return sample_variations(loaded, variations=1, **kwargs)[0]
