"""The ``lapmusic`` command: :func:`lapmusic.cli.main.main` (``python -m lapmusic.cli`` runs it)."""
