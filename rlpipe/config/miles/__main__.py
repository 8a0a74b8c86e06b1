"""`python -m rlpipe.config.miles ...` (see rlpipe.config.miles.cli)."""

import sys

from rlpipe.config.miles.cli import main

sys.exit(main())
