"""The tempo, beat and time signature a sample is written in: the primer's, else its dataset's, else 4/4.

A model's frame is its dataset's frame: a quarter note for JSB and Bach, a fixed 0.25 s for the other
benchmarks, ``frames_per_beat`` frames a quarter note for a dataset made from MIDI files
(:class:`lapmusic.data.dataset.Dataset`). A MIDI primer is read on that grid (:func:`primer_grid`), and the
continuation keeps the primer's tempo and time signature; other primers keep the dataset's
(:func:`output_meter`).
"""

from __future__ import annotations

from dataclasses import dataclass

from lapmusic.core.errors import LapMusicError


@dataclass(frozen=True)
class OutputMeter:
    """How a generated roll is written to MIDI and played.

    Attributes
    ----------
    step_seconds : float
        Seconds per frame.
    frames_per_beat : int or None
        Frames per quarter note, which sets the tempo written into the MIDI file with ``step_seconds``
        (None: :func:`lapmusic.data.midi.frames_per_beat_for` picks the tempo nearest 120 bpm).
    time_signature : tuple of (int, int) or None
        Written at time 0 (None: 4/4).
    """

    step_seconds: float
    frames_per_beat: int | None = None
    time_signature: tuple[int, int] | None = None

    @property
    def midi_options(self) -> dict:
        """The keyword arguments of :func:`lapmusic.data.midi.roll_to_midi` this meter sets."""
        return {"step_seconds": self.step_seconds, "frames_per_beat": self.frames_per_beat,
                "time_signature": self.time_signature}


def suggested_step_seconds(dataset_key: str | None, dataset=None) -> float:
    """Seconds per frame when a dataset's music is played.

    Parameters
    ----------
    dataset_key : str or None
        A dataset key (``jsb``, ``user:NAME``, ...).
    dataset : lapmusic.data.dataset.Dataset, optional
        The loaded dataset; its own ``step_seconds`` wins.

    Returns
    -------
    float
        The dataset's step, its catalogue entry's, else ``lapmusic.data.roll.DEFAULT_STEP_SECONDS``.
    """
    from lapmusic.data.catalog import DATASETS
    from lapmusic.data.roll import DEFAULT_STEP_SECONDS

    if dataset is not None and dataset.step_seconds:
        return float(dataset.step_seconds)
    info = DATASETS.get(dataset_key or "")
    return float(info.step_seconds) if info is not None else DEFAULT_STEP_SECONDS


def user_dataset(dataset_key: str | None, dataset=None):
    """The dataset whose meter counts: ``dataset`` if given, else a ``user:`` dataset loaded, else None.

    Benchmarks are not loaded (their meter is their catalogue step); a user dataset that can no longer be
    loaded gives None, so a chord or MIDI primer still samples (at 4/4).
    """
    if dataset is not None or not (dataset_key or "").startswith("user:"):
        return dataset
    from lapmusic.data.registry import load_dataset

    try:
        return load_dataset(dataset_key)
    except LapMusicError:
        return None  # deleted or replaced since training: its meter is unknown, sampling needs none


def primer_grid(dataset_key: str | None, dataset=None) -> int:
    """Frames per quarter note of a dataset's pieces: the grid a MIDI primer is read on.

    Parameters
    ----------
    dataset_key : str or None
        The run's dataset.
    dataset : lapmusic.data.dataset.Dataset, optional
        That dataset, loaded (see :func:`user_dataset`).

    Returns
    -------
    int
        The dataset's ``frames_per_beat``, else the one whose tempo at its step is nearest 120 bpm (1 for
        the 0.5 s frames of JSB, 2 for 0.25 s frames).
    """
    from lapmusic.data.midi import frames_per_beat_for

    if dataset is not None and dataset.frames_per_beat:
        return int(dataset.frames_per_beat)
    return frames_per_beat_for(suggested_step_seconds(dataset_key, dataset))


def output_meter(dataset_key: str | None, *, dataset=None, primer=None, step_seconds: float | None = None) -> OutputMeter:
    """The tempo and time signature a sample is written in.

    Parameters
    ----------
    dataset_key : str or None
        The run's dataset.
    dataset : lapmusic.data.dataset.Dataset, optional
        That dataset, loaded (see :func:`user_dataset`).
    primer : lapmusic.sampling.primer.Primer, optional
        A MIDI primer's tempo and time signature win over the dataset's.
    step_seconds : float, optional
        Seconds per frame chosen by the user: wins over every tempo.

    Returns
    -------
    OutputMeter
        With a MIDI primer: its time signature, and its tempo on the grid it was read on; else the
        dataset's time signature (None: 4/4), frames per beat and step.
    """
    qpm = primer.qpm if primer is not None else None
    signature = primer.time_signature if primer is not None else None
    if signature is None and dataset is not None:
        signature = dataset.time_signature
    beat = dataset.frames_per_beat if dataset is not None else None
    if qpm is not None:
        beat = primer_grid(dataset_key, dataset)  # the grid the MIDI primer was read on
        step = 60.0 / (qpm * beat)
    else:
        step = suggested_step_seconds(dataset_key, dataset)
    return OutputMeter(step_seconds=float(step_seconds) if step_seconds is not None else step,
                       frames_per_beat=beat, time_signature=signature)
