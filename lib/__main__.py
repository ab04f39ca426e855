"""``python -m lib``: the Replica command line."""

import sys

from lib.cli import main

sys.exit(main())
