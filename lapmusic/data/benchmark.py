"""The four benchmarks' files: where they are looked for, downloads with checksums, loading."""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Sequence

from lapmusic.core.errors import DataError, DownloadError
from lapmusic.core.io import new_temp
from lapmusic.core.progress import Progress, no_progress
from lapmusic.data.catalog import DATASETS, DatasetInfo, Source
from lapmusic.data.dataset import Dataset, cache_dir
from lapmusic.data.files import load_mat, load_pickle

DOWNLOAD_TIMEOUT_SECONDS = 30.0


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


# ------------------------------------------------------------------------------ downloads
def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, *, verify: Callable[[Path], None], progress: Progress = no_progress,
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


def fetch_benchmark(info: DatasetInfo, *, progress: Progress = no_progress,
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
