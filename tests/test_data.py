"""Datasets: real benchmark files, safe pickles, verified downloads, the Bach build, the listing."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import pickle
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from lapmusic.cli import main as cli
from lapmusic.core.errors import DataError, DownloadError
from lapmusic.data import benchmark
from lapmusic.data.bach import bach_split_of, build_bach, score_to_roll
from lapmusic.data.benchmark import data_dir_problem, fetch_benchmark
from lapmusic.data.catalog import BACH_CACHE_NAME, DATASETS, Source
from lapmusic.data.dataset import Dataset, save_dataset_npz
from lapmusic.data.files import SPLITS, load_mat, load_pickle, roll_to_pitches
from lapmusic.data.registry import is_available, load_dataset
from lapmusic.data.user import save_user_dataset

EXPECTED = {"jsb": (229, 76, 77), "nottingham": (694, 173, 170), "musedata": (524, 135, 124), "pianomidi": (87, 12, 25)}


# ------------------------------------------------------------------------------ helpers
def write_mat(path: Path, splits: dict[str, list[np.ndarray]]) -> Path:
    """A .mat file laid out like the TCN ones: (1, N) object arrays of (T, 88) uint8 rolls."""
    content = {}
    for name, pieces in splits.items():
        cell = np.empty((1, len(pieces)), dtype=object)
        for i, piece in enumerate(pieces):
            cell[0, i] = piece
        content[f"{name}data"] = cell
    scipy.io.savemat(str(path), content)
    return path


def write_original_pickle(path: Path, splits: dict[str, list[np.ndarray]]) -> Path:
    """A pickle laid out like Boulanger-Lewandowski's: pitch lists whose notes are numpy scalars."""
    content = {
        name: [[[np.int64(p) for p in frame] for frame in roll_to_pitches(piece)] for piece in pieces]
        for name, pieces in splits.items()
    }
    path.write_bytes(pickle.dumps(content, protocol=2))
    return path


def small_splits(make_rolls, sizes=(3, 2, 2)):
    rolls = make_rolls(sum(sizes), (5, 30), seed=11)
    return {"train": rolls[: sizes[0]], "valid": rolls[sizes[0]: sizes[0] + sizes[1]], "test": rolls[sizes[0] + sizes[1]:]}


# ------------------------------------------------------------------------------ real data
@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_real_benchmarks_have_published_splits_and_valid_rolls(real_data_dir, monkeypatch, key):
    monkeypatch.setenv("LAPMUSIC_DATA_DIR", str(real_data_dir))
    dataset = load_dataset(key)
    assert tuple(len(dataset.split(s)) for s in SPLITS) == EXPECTED[key]
    for name in SPLITS:
        for piece in dataset.split(name):
            assert piece.dtype == np.uint8 and piece.ndim == 2 and piece.shape[1] == 88 and len(piece) > 0
            assert piece.max() <= 1
    assert dataset.summary()["notes_per_frame"] > 1.0  # polyphonic music, not empty rolls


def test_real_mat_and_pickle_forms_agree(real_data_dir, tmp_path, monkeypatch):
    splits = load_mat(real_data_dir / "JSB_Chorales.mat", DATASETS["jsb"].split_sizes)
    write_original_pickle(tmp_path / "JSB Chorales.pickle", splits)
    monkeypatch.setenv("LAPMUSIC_DATA_DIR", str(tmp_path))  # only the pickle is there
    from_pickle = load_dataset("jsb")
    assert from_pickle.source.endswith(".pickle")
    for name in SPLITS:
        for a, b in zip(splits[name], from_pickle.split(name)):
            np.testing.assert_array_equal(a, b)


def test_cli_lists_all_four_benchmarks_available(real_data_dir, monkeypatch, capsys):
    monkeypatch.setenv("LAPMUSIC_DATA_DIR", str(real_data_dir))
    assert cli.main(["datasets", "--json"]) == 0
    rows = {row["key"]: row for row in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["datasets"]}
    assert set(rows) >= {"jsb", "nottingham", "musedata", "pianomidi", "bach"}
    for key, sizes in EXPECTED.items():
        assert rows[key]["available"] is True
        assert tuple(rows[key]["split_sizes"][s] for s in SPLITS) == sizes
        assert rows[key]["frames"]["train"] > 0
    assert rows["nottingham"]["frames"]["train"] == 176561


# ------------------------------------------------------------------------------ local files
def test_mat_with_wrong_width_or_values_is_refused(tmp_path):
    bad_width = write_mat(tmp_path / "a.mat", {"train": [np.zeros((4, 87), np.uint8)], "valid": [], "test": []})
    with pytest.raises(DataError, match=r"a.mat train\[0\]: expected a \(T, 88\)"):
        load_mat(bad_width)
    bad_values = write_mat(tmp_path / "b.mat", {"train": [np.full((4, 88), 3, np.uint8)], "valid": [], "test": []})
    with pytest.raises(DataError, match="values must be 0 or 1"):
        load_mat(bad_values)
    (tmp_path / "c.mat").write_bytes(b"this is not matlab")
    with pytest.raises(DataError, match="c.mat: not a readable MATLAB file"):
        load_mat(tmp_path / "c.mat")


def test_wrong_split_sizes_are_refused(tmp_path, make_rolls):
    path = write_mat(tmp_path / "JSB_Chorales.mat", small_splits(make_rolls))
    with pytest.raises(DataError, match="differ from the published ones"):
        load_mat(path, DATASETS["jsb"].split_sizes)


def test_hostile_pickle_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"

    class Hostile:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "JSB Chorales.pickle"
    path.write_bytes(pickle.dumps({"train": [Hostile()], "valid": [], "test": []}, protocol=2))
    with pytest.raises(DataError, match=r"refused to load: .*system"):
        load_pickle(path)
    assert not marker.exists()


def test_original_pickle_with_numpy_scalars_loads(tmp_path, make_rolls):
    splits = small_splits(make_rolls)
    loaded = load_pickle(write_original_pickle(tmp_path / "x.pickle", splits))
    for name in SPLITS:
        for a, b in zip(splits[name], loaded[name]):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------ downloads
class _Server:
    """A local HTTP server on 127.0.0.1 serving fixed bodies; '/truncated/...' lies about its length."""

    def __init__(self, files: dict[str, bytes]):
        files_ = files

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                body = files_.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                claimed = len(body) * 2 if self.path.startswith("/truncated/") else len(body)
                self.send_header("Content-Length", str(claimed))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path, make_rolls):
    splits = small_splits(make_rolls)
    mat_bytes = write_mat(tmp_path / "good.mat", splits).read_bytes()
    pickle_bytes = write_original_pickle(tmp_path / "good.pickle", splits).read_bytes()
    corrupt = bytearray(mat_bytes)
    corrupt[200] ^= 0xFF
    server = _Server({
        "/good.mat": mat_bytes, "/corrupt.mat": bytes(corrupt), "/truncated/good.mat": mat_bytes,
        "/good.pickle": pickle_bytes, "/wrong.pickle": pickle.dumps({"train": []}, protocol=2),
    })
    info = replace(DATASETS["jsb"], sha256=hashlib.sha256(mat_bytes).hexdigest(),
                   split_sizes={"train": 3, "valid": 2, "test": 2})
    yield server, info, splits
    server.close()


def _cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_download_verifies_checksum_and_stores_file(served, tmp_path):
    server, info, splits = served
    cache = tmp_path / "cache"
    calls = []
    path = fetch_benchmark(info, sources=[Source(server.url + "/good.mat", "mat")], cache=cache,
                                progress=lambda f, m: calls.append((f, m)))
    assert path == cache / "JSB_Chorales.mat" and _cache_files(cache) == ["JSB_Chorales.mat"]
    assert calls and calls[-1][0] == pytest.approx(1.0)
    np.testing.assert_array_equal(load_mat(path)["train"][0], splits["train"][0])


@pytest.mark.parametrize("bad", ["/corrupt.mat", "/truncated/good.mat", "/missing.mat"])
def test_bad_download_leaves_cache_clean_and_says_what_was_tried(served, tmp_path, bad):
    server, info, _ = served
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match=r"^could not download JSB Chorales\. Tried:") as caught:
        fetch_benchmark(info, sources=[Source(server.url + bad, "mat")], cache=cache)
    message = str(caught.value)
    assert server.url + bad in message and "LAPMUSIC_DATA_DIR" in message and "JSB_Chorales.mat" in message
    if bad == "/corrupt.mat":
        assert "checksum mismatch" in message
    assert _cache_files(cache) == []


def test_second_source_is_used_when_the_first_fails(served, tmp_path):
    server, info, splits = served
    cache = tmp_path / "cache"
    path = fetch_benchmark(
        info, cache=cache,
        sources=[Source(server.url + "/corrupt.mat", "mat"), Source(server.url + "/wrong.pickle", "pickle"),
                 Source(server.url + "/good.pickle", "pickle")],
    )
    assert path.name == "JSB Chorales.pickle" and _cache_files(cache) == ["JSB Chorales.pickle"]
    np.testing.assert_array_equal(load_pickle(path)["test"][1], splits["test"][1])


def test_load_dataset_downloads_into_cache_when_missing(served, tmp_path, monkeypatch):
    server, info, _ = served
    info = replace(info, sources=(Source(server.url + "/good.mat", "mat"),))
    monkeypatch.setitem(DATASETS, "jsb", info)
    monkeypatch.delenv("LAPMUSIC_DATA_DIR", raising=False)
    monkeypatch.setenv("LAPMUSIC_CACHE_DIR", str(tmp_path / "cache"))
    assert not is_available("jsb")
    dataset = load_dataset("jsb")
    assert len(dataset.train) == 3 and is_available("jsb")


# ------------------------------------------------------------------------------ Bach
def test_bach_build_is_offline_deterministic_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("LAPMUSIC_CACHE_DIR", str(tmp_path))
    calls = []
    small = build_bach(progress=lambda f, m: calls.append(f), limit=6)
    assert calls[-1] == 1.0
    pieces = small.train + small.valid + small.test
    assert 4 <= len(pieces) <= 6
    for piece in pieces:
        assert piece.shape[1] == 88 and piece.dtype == np.uint8 and 2 <= piece.sum(axis=1).max() <= 6
    assert bach_split_of("bwv1.6.mxl") == bach_split_of("bwv1.6.mxl")
    # The cache is what load_dataset reads: once it exists, nothing is parsed again.
    save_dataset_npz(small, tmp_path / BACH_CACHE_NAME)
    from lapmusic.data import bach

    monkeypatch.setattr(bach, "build_bach", lambda *a, **k: pytest.fail("rebuilt despite the cache"))
    again = load_dataset("bach")
    for a, b in zip(small.train, again.train):
        np.testing.assert_array_equal(a, b)


def test_score_to_roll_samples_sounding_notes_on_beats():
    from music21 import chord, note, stream

    part = stream.Stream()
    part.append(note.Note("C4", quarterLength=2))  # beats 0-1
    part.append(note.Note("D4", quarterLength=0.5))  # beat 2
    part.append(note.Note("E4", quarterLength=0.5))  # between beats: vanishes
    part.append(chord.Chord(["G4", "B4"], quarterLength=1))  # beat 3
    roll = score_to_roll(part)
    assert [sorted(21 + np.flatnonzero(f)) for f in roll] == [[60], [60], [62], [67, 71]]


def test_unknown_dataset_key_is_a_clear_error():
    with pytest.raises(DataError, match="unknown dataset 'jsbb'; choose one of jsb, nottingham"):
        load_dataset("jsbb")
    with pytest.raises(DataError, match="no user dataset 'user:nothing'"):
        load_dataset("user:nothing")


# ------------------------------------------------------------------------------ unknown keys, LAPMUSIC_DATA_DIR named
def test_a_missing_data_dir_is_named_before_any_download(tmp_path, monkeypatch):
    missing = tmp_path / "nope"
    monkeypatch.setenv("LAPMUSIC_DATA_DIR", str(missing))
    monkeypatch.setenv("LAPMUSIC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(benchmark, "fetch_benchmark", lambda *a, **k: pytest.fail("downloaded despite the typo"))
    assert data_dir_problem() == f"LAPMUSIC_DATA_DIR={missing} does not exist"
    with pytest.raises(DataError, match=r"^LAPMUSIC_DATA_DIR=.* does not exist: point it at the folder") as caught:
        load_dataset("jsb")
    assert str(caught.value).startswith(
        f"LAPMUSIC_DATA_DIR={missing} does not exist: point it at the folder that holds 'JSB_Chorales.mat' or "
        "'JSB Chorales.pickle', or unset it"
    )


def test_a_data_dir_without_the_expected_files_is_named_in_the_download_error(served, tmp_path, monkeypatch):
    server, info, _ = served
    empty = tmp_path / "data"
    empty.mkdir()
    (empty / "jsb.mat").write_bytes(b"a near miss")
    monkeypatch.setenv("LAPMUSIC_DATA_DIR", str(empty))
    assert data_dir_problem().startswith(f"LAPMUSIC_DATA_DIR={empty} holds none of the expected files ('JSB")
    with pytest.raises(DownloadError, match=r"To work offline, put 'JSB_Chorales\.mat'") as caught:
        fetch_benchmark(info, sources=[Source(server.url + "/missing.mat", "mat")], cache=tmp_path / "cache")
    assert (f"into LAPMUSIC_DATA_DIR={empty} (it holds neither 'JSB_Chorales.mat' nor 'JSB Chorales.pickle' now)"
            in str(caught.value))
    assert "set LAPMUSIC_DATA_DIR to it" not in str(caught.value)


def test_datasets_marks_one_bad_file_and_lists_the_others(tmp_path, monkeypatch, capsys, make_rolls):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "JSB_Chorales.mat").write_bytes(b"this is not matlab")
    monkeypatch.setenv("LAPMUSIC_DATA_DIR", str(folder))
    monkeypatch.setenv("LAPMUSIC_CACHE_DIR", str(tmp_path / "cache"))
    rolls = make_rolls(4, 10, seed=1)
    save_user_dataset(Dataset("user:mine", "mine", rolls[:2], rolls[2:3], rolls[3:]))
    assert cli.main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[:2] for line in out.splitlines()[1:3]] == [["jsb", "bad"], ["nottingham", "download"]]
    assert f"bad jsb ({folder / 'JSB_Chorales.mat'}): JSB_Chorales.mat: not a readable MATLAB file" in out
    assert any(line.split()[:3] == ["user:mine", "local", "2/1/1"] for line in out.splitlines())
    assert cli.main(["datasets", "--json"]) == 0
    rows = {r["key"]: r for r in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["datasets"]}
    assert "not a readable MATLAB file" in rows["jsb"]["error"] and rows["user:mine"]["frames"]["train"] == 20


# ------------------------------------------------------------------------------ CLI: datasets prepare
def test_cli_datasets_prepare_builds_bach_once_with_progress(tmp_path, monkeypatch, capsys, make_rolls):
    from lapmusic.data import bach

    monkeypatch.setenv("LAPMUSIC_CACHE_DIR", str(tmp_path / "cache"))
    rolls = make_rolls(5, 12, seed=6)
    builds = []

    def small_build(progress=None, limit=None):
        builds.append(1)
        progress(0.5, "building Bach chorales: half way")
        return Dataset("bach", "Bach chorales (offline)", rolls[:3], rolls[3:4], rolls[4:], 0.5, "test")

    monkeypatch.setattr(bach, "build_bach", small_build)
    assert cli.main(["datasets", "prepare"]) == 0
    captured = capsys.readouterr()
    assert "building Bach chorales: half way" in captured.err
    assert captured.out.startswith("bach ready: 3 / 1 / 1 pieces (train/valid/test)")
    assert (tmp_path / "cache" / BACH_CACHE_NAME).is_file() and builds == [1]
    assert cli.main(["datasets", "prepare", "bach", "--json"]) == 0  # cached: not built again
    assert json.loads(capsys.readouterr().out.strip())["split_sizes"] == {"train": 3, "valid": 1, "test": 1}
    assert builds == [1]
    assert cli.main(["datasets", "prepare", "bach", "--rebuild"]) == 0 and builds == [1, 1]
    assert cli.main(["datasets", "prepare", "bachh"]) == 2
    assert "unknown dataset 'bachh'" in capsys.readouterr().err


def test_reference_data_table_matches_the_code():
    readme = (Path(__file__).resolve().parents[1] / "docs" / "reference.md").read_text()
    for key, sizes in EXPECTED.items():
        assert f"| `{key}` |" in readme and " / ".join(map(str, sizes)) in readme
    assert "252 / 79 / 77" in readme and "60/20/20 split |" not in readme


def test_datasets_reports_a_damaged_bach_cache_without_rebuilding_it(tmp_path, monkeypatch, capsys):
    from lapmusic.data import bach

    monkeypatch.setenv("LAPMUSIC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("LAPMUSIC_DATA_DIR", raising=False)
    (tmp_path / BACH_CACHE_NAME).write_bytes(b"not an npz")
    monkeypatch.setattr(bach, "build_bach", lambda *a, **k: pytest.fail("listing rebuilt the Bach set"))
    assert cli.main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert any(line.split()[:2] == ["bach", "bad"] for line in out.splitlines())
    assert "unreadable dataset file" in out and "lapmusic datasets prepare bach --rebuild" in out
