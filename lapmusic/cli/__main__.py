import sys

from lapmusic.cli.main import main

sys.exit(main())
