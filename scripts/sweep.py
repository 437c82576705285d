"""Moved: the grid runner is ``lapmusic sweep`` (lapmusic/cli/sweep.py, lapmusic/jobs/grid.py and gridrun.py).

    python scripts/sweep.py ARGS...   is   lapmusic sweep ARGS...   (kept for old command lines)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lapmusic.cli.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
