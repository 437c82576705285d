"""What does the worst upload cost the server process, and how fast are hostile inputs refused?

Every case runs in a fresh child process that first loads the upload's bytes into memory (the server
holds them too), then measures the app's own path: ``dataset_from_midi`` on ``(name, bytes)`` pairs and
``save_user_dataset`` into a temporary cache. Reported per case: CPU seconds (user + system of the child,
``resource.getrusage``), wall seconds, and the peak resident memory above the child's idle level (Linux:
``/proc/self/clear_refs`` resets the high-water mark after the bytes are loaded, ``VmHWM - VmRSS``).
MB are 2**20 bytes throughout.

Accepted cases are the largest uploads the default limits let through, each pushing one cost:

* ``dense``: as many files as fit the upload's byte limit, each with the most notes (200,000) and the most
  frames (20,000) a file may have: the scanner's and the roll's CPU;
* ``flood``: files filled with controller events (no note until the end) up to the per-file event limit:
  the scanner's CPU per event;
* ``long``: the most files per upload, each a few notes spread over the most frames: the rolls' memory;
* ``tempo flood``: one file of tempo changes (7 bytes each) up to the per-file event limit, then a note: the
  tempo map's CPU and memory;
* ``normal``: a real piece (music21's copy of Mozart's K. 525, 53 KB, 83 tempo changes).

Refused cases: a 52-byte file (a note at tick 9,999,990, ``ticks_per_beat`` 1), a 2M-tick variant, maximal
time deltas, a 400 KB time value (the standard allows 4 bytes), one note too many, a full-size event flood
whose last note is days away (refused only at the end of the scan), 8 MB of tempo changes (about 1.2 M, refused
at the event limit), one file too many, one byte too many.

``--reader mido`` parses every file of each case with ``mido.MidiFile`` instead (what ``pretty_midi`` reads
with), to compare.

    .venv/bin/python benchmarks/bench_upload.py [--reader mido] [--json results.json]

Targets: accepted < 500 MB above idle and < 10 s CPU; refused < 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


# ------------------------------------------------------------------------------ inputs
def smf(track: bytes, ticks_per_beat: int = 480) -> bytes:
    return (b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big")
            + ticks_per_beat.to_bytes(2, "big") + b"MTrk" + len(track).to_bytes(4, "big") + track)


def varlen(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def dense_file(notes: int, per_chord: int = 10, ticks_per_chord: int = 240) -> bytes:
    """Chords of ``per_chord`` notes, each ``ticks_per_chord`` long (480 ticks a beat, 600 bpm so that the
    most frames stay within the limit in seconds), running status."""
    body = bytearray(b"\x00\xff\x51\x03" + (100_000).to_bytes(3, "big") + b"\x00\x90")
    for chord in range(notes // per_chord):
        pitches = [30 + (chord + 7 * k) % 60 for k in range(per_chord)]
        for k, pitch in enumerate(pitches):
            body += bytes([pitch, 80]) if chord == 0 and k == 0 else bytes([0, pitch, 80])
        for k, pitch in enumerate(pitches):
            body += (varlen(ticks_per_chord) if k == 0 else b"\x00") + bytes([pitch, 0])
    body += b"\x00\xff\x2f\x00"
    return smf(bytes(body))


def pad(data: bytes, size: int) -> bytes:
    """``data`` followed by an unknown chunk (skipped by readers, as the standard says) up to ``size`` bytes."""
    missing = size - len(data)
    assert missing == 0 or missing >= 8, missing
    return data + (b"XPAD" + (missing - 8).to_bytes(4, "big") + bytes(missing - 8) if missing else b"")


def flood_file(size: int, last_note_tick: int = 0) -> bytes:
    """Controller events (running status, 3 bytes each) filling ``size`` bytes, then one note (4 beats
    long, or starting at ``last_note_tick``)."""
    note = varlen(last_note_tick) + b"\x90\x3c\x50" + varlen(1920) + b"\x3c\x00" + b"\x00\xff\x2f\x00"
    events = (size - 14 - 8 - len(note) - 2 - 8) // 3
    body = b"\x00\xb0" + b"\x07\x64" + b"\x00\x07\x64" * (events - 1) + note
    return pad(smf(body), size)


def long_file(frames: int, steps_per_beat: int = 2) -> bytes:
    """Three notes, the last ending at frame ``frames`` (480 ticks a beat, 600 bpm so that it stays within
    the limit in seconds)."""
    end = frames * 480 // steps_per_beat
    body = (b"\x00\xff\x51\x03" + (100_000).to_bytes(3, "big") + b"\x00\x90\x3c\x50" + varlen(end // 2) + b"\x3c\x00" + b"\x00\x40\x50" + varlen(end // 4)
            + b"\x40\x00" + b"\x00\x43\x50" + varlen(end - end // 2 - end // 4) + b"\x43\x00" + b"\x00\xff\x2f\x00")
    return smf(body)


def tempo_flood_file(size: int) -> bytes:
    """Tempo changes one tick apart (alternately 600 and 300 bpm, 7 bytes each) filling ``size`` bytes, then
    one note four beats long."""
    note = b"\x00\x90\x3c\x50" + varlen(1920) + b"\x3c\x00" + b"\x00\xff\x2f\x00"
    events = (size - 14 - 8 - len(note) - 8) // 7
    fast, slow = (b"\x01\xff\x51\x03" + (us).to_bytes(3, "big") for us in (100_000, 200_000))
    body = (fast + slow) * (events // 2) + fast * (events % 2) + note
    return pad(smf(body), size)


def normal_file() -> bytes:
    """A real piece: music21's copy of Mozart's Eine kleine Nachtmusik, first movement."""
    import music21

    return (Path(music21.__file__).parent / "omr" / "k525MIDIMvt1.mid").read_bytes()


def tiny_then_far(tick: int) -> bytes:
    body = b"\x00\x90\x3c\x50\x01\x3c\x00" + varlen(tick) + b"\x3e\x50\x01\x3e\x00\x00\xff\x2f\x00"
    return smf(body, ticks_per_beat=1)


def long_time_value(size: int) -> bytes:
    """A note whose delta time is a variable-length number of ``size`` bytes."""
    return smf(b"\x00\x90\x3c\x50" + b"\xff" * size + b"\x7f\x3c\x00\x00\xff\x2f\x00")


def max_deltas() -> bytes:
    body = bytearray(b"\x00\x90\x3c\x50\x00\x3c\x00")
    for _ in range(64):
        body += b"\xff\xff\xff\x7f\xff\x01\x00"
    body += b"\x00\x90\x3e\x50\x01\x3e\x00\x00\xff\x2f\x00"
    return smf(bytes(body), 96)


def cases() -> dict[str, tuple[str, object]]:
    """name -> (expected outcome, builder of the list of (name, bytes)) under the default limits."""
    from lapmusic.data.midifile import MidiLimits
    from lapmusic.data.user import UploadLimits

    midi, upload = MidiLimits(), UploadLimits()
    dense_one = dense_file(midi.max_notes)
    n_dense = min(upload.max_files, upload.max_bytes // len(dense_one))
    flood_size = min(midi.max_bytes, upload.max_bytes, 3 * (midi.max_events - 4))  # 3 bytes an event
    n_flood = upload.max_bytes // flood_size
    return {
        "dense": ("accepted", lambda: [(f"dense{i}.mid", dense_one) for i in range(n_dense)]),
        "flood": ("accepted", lambda: [(f"flood{i}.mid", flood_file(flood_size)) for i in range(n_flood)]),
        "long": ("accepted", lambda: [(f"long{i}.mid", long_file(midi.max_frames)) for i in range(upload.max_files)]),
        "tempo flood": ("accepted", lambda: [("tempo.mid", tempo_flood_file(min(midi.max_bytes,
                                                                                   7 * (midi.max_events - 4))))]),
        "normal": ("accepted", lambda: [("k525.mid", normal_file())]),
        "attack 52 B": ("refused", lambda: [("attack.mid", tiny_then_far(9_999_990))]),
        "attack 2M ticks": ("refused", lambda: [("attack.mid", tiny_then_far(2_000_000))]),
        "max deltas": ("refused", lambda: [("far.mid", max_deltas())]),
        "long time value": ("refused", lambda: [("long.mid", long_time_value(400_000))]),
        "one note too many": ("refused", lambda: [("notes.mid", dense_file(midi.max_notes + 10))]),
        "flood, far note": ("refused", lambda: [("flood.mid", flood_file(flood_size, 0x0FFFFFFF))]),
        "tempo flood 8 MB": ("refused", lambda: [("tempo.mid", tempo_flood_file(midi.max_bytes))]),
        "one file too many": ("refused", lambda: [(f"f{i}.mid", dense_file(40)) for i in range(upload.max_files + 1)]),
        "one byte too many": ("refused", lambda: [(f"f{i}.mid", flood_file(flood_size)) for i in range(n_flood)]
                              + [("one.mid", b"M" * (upload.max_bytes - n_flood * flood_size + 1))]),
    }


# ------------------------------------------------------------------------------ one case (child process)
def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def parse_with_mido(upload: list) -> str:
    import io

    import mido

    events = 0
    for name, data in upload:
        try:
            events += sum(len(track) for track in mido.MidiFile(file=io.BytesIO(data)).tracks)
        except Exception as exc:  # noqa: BLE001 - mido raises many kinds on bad files
            return f"refused: mido: {name}: {type(exc).__name__}: {exc}"[:200]
    return f"accepted: mido read {events:,} events"


def parse_like_the_app(upload: list) -> str:
    from lapmusic.core.errors import LapMusicError
    from lapmusic.data.user import dataset_from_midi, save_user_dataset

    try:
        dataset, bad = dataset_from_midi(upload, "bench")
        save_user_dataset(dataset, replace=True)  # every case under one name: the cost, not the name, is measured
    except LapMusicError as exc:
        return f"refused: {exc}"
    outcome = f"accepted: {len(dataset.train) + len(dataset.valid) + len(dataset.test)} pieces, " \
              f"{sum(len(p) for s in ('train', 'valid', 'test') for p in dataset.split(s)):,} frames"
    return outcome + (f"; refused {bad[0].name}: {bad[0].reason}" if bad else "")


def run_case(name: str, folder: str, reader: str = "lapmusic") -> dict:
    import mido  # noqa: F401 - both readers imported before measuring, so neither pays for imports

    import lapmusic.data.user  # noqa: F401

    os.environ["LAPMUSIC_CACHE_DIR"] = folder
    files = json.loads((Path(folder) / "files.json").read_text())
    upload = [(n, (Path(folder) / n).read_bytes()) for n in files]  # the upload, held in memory
    idle = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0, wall0 = usage.ru_utime + usage.ru_stime, time.perf_counter()
    outcome = parse_with_mido(upload) if reader == "mido" else parse_like_the_app(upload)
    wall = time.perf_counter() - wall0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "case": name, "files": len(upload), "megabytes": round(sum(len(b) for _, b in upload) / 2**20, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime - cpu0, 3), "wall_s": round(wall, 3),
        "peak_above_idle_mb": round((_status("VmHWM") - idle) / 2**20, 1), "outcome": outcome[:200],
    }


# ------------------------------------------------------------------------------ driver
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--reader", choices=("lapmusic", "mido"), default="lapmusic",
                        help="lapmusic: the app's path (default); mido: mido.MidiFile on each file, to compare")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.folder, args.reader)))
        return
    load = os.getloadavg()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) at the start")
    header = f"{'case':<19}{'expected':<10}{'files':>6}{'MB':>7}{'CPU s':>8}{'wall s':>8}{'peak MB':>9}  outcome"
    print(header)
    results = []
    for name, (expected, build) in cases().items():
        with tempfile.TemporaryDirectory(prefix="bench_upload.") as folder:
            upload = build()
            for file_name, data in upload:
                (Path(folder) / file_name).write_bytes(data)
            (Path(folder) / "files.json").write_text(json.dumps([n for n, _ in upload]))
            del upload
            child = subprocess.run(
                [sys.executable, __file__, "--case", name, "--folder", folder, "--reader", args.reader],
                capture_output=True, text=True, check=True,
            )
        row = {"expected": expected, **json.loads(child.stdout.strip().splitlines()[-1])}
        results.append(row)
        print(f"{name:<19}{expected:<10}{row['files']:>6}{row['megabytes']:>7.1f}{row['cpu_s']:>8.2f}"
              f"{row['wall_s']:>8.2f}{row['peak_above_idle_mb']:>9.1f}  {row['outcome'][:90]}", flush=True)
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"load_end": load, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
