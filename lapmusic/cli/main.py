"""The ``lapmusic`` command: datasets, LAE pre-training, training, evaluation, sampling.

Every subcommand with ``--json`` prints exactly one JSON object as the last line of stdout;
progress lines go to stderr so that stdout stays machine-readable. A user's mistake
(a :class:`~lapmusic.core.errors.LapMusicError`) is one ``error:`` line on stderr and exit code 2.

Each subcommand lives in one module with its parser and its body: :mod:`.datasets`, :mod:`.lae`,
:mod:`.training` (``train``, ``evaluate``, ``compare``) and :mod:`.generate` (``generate``, ``stats``);
:mod:`.common` holds what they share. Building the parser imports no torch, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from lapmusic import __version__
from lapmusic.cli.datasets import add_datasets_parser
from lapmusic.cli.generate import add_generate_parsers
from lapmusic.cli.lae import add_lae_parser
from lapmusic.cli.sweep import add_sweep_parser
from lapmusic.cli.training import add_training_parsers
from lapmusic.core.errors import LapMusicError


def build_parser() -> argparse.ArgumentParser:
    """The ``lapmusic`` argument parser with every subcommand; each sets ``func``, the command to run."""
    parser = argparse.ArgumentParser(
        prog="lapmusic",
        description="Pre-training RNNs on polyphonic music via linear autoencoders "
        "(Pasa & Sperduti, NIPS 2014): datasets, LAE, training, evaluation, sampling.",
    )
    parser.add_argument("--version", action="version", version=f"lapmusic {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_datasets_parser(sub)
    add_lae_parser(sub)
    add_training_parsers(sub)
    add_generate_parsers(sub)
    add_sweep_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lapmusic`` with ``argv`` (default: the process's arguments).

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name, e.g. ``["generate", "RUNDIR", "--out", "a.mid"]``.

    Returns
    -------
    int
        The exit code: 0 on success, 2 for a user's mistake or a failed write (one ``error:`` line on
        stderr), 130 when interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LapMusicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (OSError, RuntimeError) as exc:
        # A full disk or a read-only folder (torch.save wraps ENOSPC in a RuntimeError): one line, no traceback.
        from lapmusic.core.io import storage_cause, storage_error

        cause = storage_cause(exc)
        if cause is None:
            raise
        folder = os.path.dirname(os.path.abspath(cause.filename)) if cause.filename else "the output folder"
        print(f"error: {storage_error(folder, exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
