"""``python -m llmdiet <subcommand> ...``: the same as the ``llmdiet`` command."""

import sys

from llmdiet.cli import main

sys.exit(main())
