"""Fingerprints of piano-roll data: which pieces a run was trained on, or an LAE fitted on, so that a later use
of the same dataset name can tell whether its data changed (a user dataset replaced, a benchmark file swapped).

A fingerprint of a list of pieces is its count, its frames and a SHA-256 over every piece's length and its
0/1 frames packed to bits (a piece is 11 bytes a frame: hashing JSB's 230 training pieces takes milliseconds).
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

SPLITS = ("train", "valid", "test")


def pieces_fingerprint(pieces: Sequence[np.ndarray]) -> dict:
    """The count, frames and hash of a list of piano rolls.

    Parameters
    ----------
    pieces : sequence of array-like of shape (T_i, 88)
        Piano rolls; a value counts as a note when it is non-zero.

    Returns
    -------
    dict
        ``{"pieces": int, "frames": int, "sha256": str}``; equal for equal pieces in equal order.
    """
    digest = hashlib.sha256()
    frames = 0
    for piece in pieces:
        roll = np.asarray(piece)
        digest.update(int(roll.shape[0]).to_bytes(8, "little"))
        digest.update(np.packbits(roll != 0).tobytes())
        frames += int(roll.shape[0])
    return {"pieces": len(pieces), "frames": frames, "sha256": digest.hexdigest()}


def dataset_fingerprint(dataset) -> dict:
    """:func:`pieces_fingerprint` of each split of ``dataset`` (anything with ``.train``, ``.valid``, ``.test``).

    Returns
    -------
    dict
        ``{"train": {...}, "valid": {...}, "test": {...}}``.
    """
    return {split: pieces_fingerprint(list(getattr(dataset, split))) for split in SPLITS}


def describe_change(then: dict, now: dict) -> str | None:
    """What differs between two :func:`dataset_fingerprint` results, in words; ``None`` when nothing does.

    Splits missing from ``then`` (a record that did not keep them) are not compared.
    """
    changes = []
    for split in SPLITS:
        before, after = then.get(split), now.get(split)
        if not isinstance(before, dict) or before.get("sha256") == after["sha256"]:
            continue
        sizes = (f"{before.get('pieces')} pieces, {before.get('frames'):,} frames" if isinstance(before.get("frames"), int)
                 else "other pieces")
        if (before.get("pieces"), before.get("frames")) == (after["pieces"], after["frames"]):
            changes.append(f"its {split} split holds other notes (the same {after['pieces']} pieces, "
                           f"{after['frames']:,} frames)")
        else:
            changes.append(f"its {split} split had {sizes} and now has {after['pieces']} pieces, "
                           f"{after['frames']:,} frames")
    return "; ".join(changes) or None
