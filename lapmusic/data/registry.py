"""Datasets of polyphonic music as piano rolls.

Every piece is a ``(T, 88)`` uint8 array of 0/1, column ``k`` = MIDI pitch ``21 + k``.

Registered datasets (``DATASETS``):

* ``jsb``, ``nottingham``, ``musedata``, ``pianomidi``: the four benchmarks of Boulanger-Lewandowski,
  Bengio & Vincent (ICML 2012) with their standard train/valid/test splits. They are looked for, in order,
  in the folder named by ``LAPMUSIC_DATA_DIR`` (``.mat`` files as in the TCN repository, or the original
  ``.pickle`` files), in the user cache (``LAPMUSIC_CACHE_DIR``, default the platform's user cache folder),
  and finally downloaded into the cache from several sources in turn, verified before use.
* ``bach``: an offline default built from the Bach chorales inside the ``music21`` package (no network),
  quantised to quarter notes like JSB; see :mod:`lapmusic.data.bach`.
* ``user:NAME``: a dataset made from your own MIDI files (:mod:`lapmusic.data.user`).
"""

from __future__ import annotations

from lapmusic.core.errors import DataError
from lapmusic.core.progress import Progress, no_progress
from lapmusic.data.benchmark import _load_benchmark, find_local_file
from lapmusic.data.catalog import BACH_CACHE_NAME, DATASETS
from lapmusic.data.dataset import Dataset, cache_dir, load_dataset_npz


# ------------------------------------------------------------------------------ public entry points
def dataset_key(text: str) -> str:
    """The key a dataset is registered under, however it was typed: names are case-insensitive.

    Parameters
    ----------
    text : str
        A key as a user typed it, e.g. ``"JSB"``, ``" Nottingham "`` or ``"User:My Songs"``.

    Returns
    -------
    key : str
        ``"jsb"``, ``"nottingham"``, ``"user:my-songs"`` (a user dataset's name as it is stored, see
        :func:`lapmusic.data.user.slugify`); an unknown name is returned lower-cased, for the caller to refuse.
    """
    key = text.strip()
    if key.lower().startswith("user:"):
        from lapmusic.data.user import slugify

        return "user:" + slugify(key[len("user:"):])
    return key.lower()


def load_dataset(key: str, progress: Progress | None = None) -> Dataset:
    """Load a dataset by key; a benchmark is downloaded, and the Bach set built, on first use.

    Parameters
    ----------
    key : str
        ``"jsb"``, ``"nottingham"``, ``"musedata"``, ``"pianomidi"``, ``"bach"`` or ``"user:NAME"`` (see
        the module docstring), in any case (:func:`dataset_key`).
    progress : callable, optional
        ``progress(fraction, message)``, called while a file is downloaded, built or read.

    Returns
    -------
    dataset : Dataset

    Raises
    ------
    DataError
        If the key is unknown, a user dataset does not exist, or a file is damaged or not the expected
        dataset.
    DownloadError
        If a benchmark is not local and no source could be downloaded and verified; the message says how to
        work offline.
    """
    progress = progress or no_progress
    key = dataset_key(key)
    if key.startswith("user:"):
        from lapmusic.data.user import user_dataset_path

        path = user_dataset_path(key)
        if not path.is_file():
            raise DataError(f"no user dataset {key!r}; make one from your MIDI files first "
                            "(lapmusic datasets add NAME FILES, or the app's upload)")
        return load_dataset_npz(path, key)
    if key not in DATASETS:
        raise DataError(f"unknown dataset {key!r}; choose one of {', '.join(DATASETS)} or user:NAME")
    if key == "bach":
        from lapmusic.data.bach import load_bach

        return load_bach(progress)
    return _load_benchmark(DATASETS[key], progress)


def is_available(key: str) -> bool:
    """True when loading needs no network (the file is local, or the dataset is built offline)."""
    key = dataset_key(key)
    if key == "bach":
        return True
    if key.startswith("user:"):
        from lapmusic.data.user import user_dataset_path

        return user_dataset_path(key).is_file()
    return find_local_file(DATASETS[key]) is not None


def describe_datasets(progress: Progress | None = None, load: bool = True) -> list[dict]:
    """Describe every registered and user dataset, for listings.

    Nothing is downloaded or built: only local files are read, and ``bach`` only when its cache exists.

    Parameters
    ----------
    progress : callable, optional
        ``progress(fraction, message)``, called as each dataset is read.
    load : bool, default=True
        Read the local datasets to count their pieces and frames.

    Returns
    -------
    rows : list of dict
        One per dataset: ``key``, ``name``, ``available`` (loads without network), ``split_sizes`` and
        ``frames`` (dicts by split, or None when unknown), ``notes_per_frame`` when read, ``built`` for
        ``bach``. A dataset whose file cannot be read has ``error`` (the reason) and ``file`` instead of
        counts; the others are still listed.
    """
    from lapmusic.data.user import user_dataset_keys

    progress = progress or no_progress
    keys = list(DATASETS) + user_dataset_keys()
    rows = []
    for i, key in enumerate(keys):
        info = DATASETS.get(key)
        available = is_available(key)
        row = {
            "key": key,
            "name": info.name if info else key.removeprefix("user:"),
            "available": available,
            "split_sizes": dict(info.split_sizes) if info and info.split_sizes else None,
            "frames": None,
        }
        if key == "bach":
            row["built"] = (cache_dir() / BACH_CACHE_NAME).is_file()
        local = available and (key != "bach" or row["built"])
        if load and local:
            progress(i / len(keys), f"reading {row['name']}")
            try:
                if key == "bach":  # read the cache as it is: a damaged one is reported, not rebuilt here
                    dataset = load_dataset_npz(cache_dir() / BACH_CACHE_NAME, key)
                else:
                    dataset = load_dataset(key)
                summary = dataset.summary()
            except DataError as exc:
                row["error"] = str(exc)
                local_file = find_local_file(info) if info and info.mat_file else None
                row["file"] = str(local_file) if local_file else None
                if key == "bach":
                    row["error"] += " (it is rebuilt on first use, or now with: lapmusic datasets prepare bach --rebuild)"
            else:
                row["split_sizes"] = summary["split_sizes"]
                row["frames"] = summary["frames"]
                row["notes_per_frame"] = round(summary["notes_per_frame"], 3)
        rows.append(row)
    progress(1.0, "datasets listed")
    return rows
